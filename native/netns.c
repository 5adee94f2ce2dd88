// What Node cannot do: switch the calling thread's network namespace, flock, and execv.
//
// Everything here runs synchronously on the JavaScript thread and always returns
// that thread to the namespace it started in before control goes back to
// JavaScript. Sockets opened (and sysctl files opened synchronously) while the
// thread is inside stay bound to the target namespace afterwards.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>
#include <node_api.h>

#define NETNS_RUN_DIR "/run/netns"

static napi_value throw_errno(napi_env env, const char *syscall, const char *path, int err) {
  char msg[512];
  snprintf(msg, sizeof msg, "%s %s: %s", syscall, path ? path : "", strerror(err));
  napi_value code, message, error, errnoVal, syscallVal;
  const char *name = "EUNKNOWN";
  switch (err) {
    case EEXIST: name = "EEXIST"; break;
    case ENOENT: name = "ENOENT"; break;
    case EPERM: name = "EPERM"; break;
    case EACCES: name = "EACCES"; break;
    case EINVAL: name = "EINVAL"; break;
    case EBUSY: name = "EBUSY"; break;
    case EBADF: name = "EBADF"; break;
    case ENOTDIR: name = "ENOTDIR"; break;
    case ENAMETOOLONG: name = "ENAMETOOLONG"; break;
    case ENOSPC: name = "ENOSPC"; break;
  }
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, code, message, &error);
  napi_create_int32(env, err, &errnoVal);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &syscallVal);
  napi_set_named_property(env, error, "errno", errnoVal);
  napi_set_named_property(env, error, "syscall", syscallVal);
  napi_throw(env, error);
  return NULL;
}

static int current_netns_fd(void) {
  return open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
}

// Going back must never fail silently: a JavaScript thread left in the wrong
// namespace would make every later socket and sysctl land there.
static void return_or_abort(int self_fd) {
  if (setns(self_fd, CLONE_NEWNET) != 0) {
    fprintf(stderr, "twill: fatal: cannot return to the original network namespace: %s\n", strerror(errno));
    abort();
  }
  close(self_fd);
}

static int get_path_arg(napi_env env, napi_value v, char *buf, size_t len) {
  size_t copied;
  if (napi_get_value_string_utf8(env, v, buf, len, &copied) != napi_ok || copied == 0 || copied >= len - 1) return -1;
  return 0;
}

// runInNetns(fd, fn): fn() runs with the thread inside the namespace of fd.
static napi_value run_in_netns(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], global, result = NULL;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t target;
  if (argc < 2 || napi_get_value_int32(env, argv[0], &target) != napi_ok) {
    napi_throw_type_error(env, NULL, "runInNetns(fd, fn): fd must be a number");
    return NULL;
  }
  int self_fd = current_netns_fd();
  if (self_fd < 0) return throw_errno(env, "open", "/proc/thread-self/ns/net", errno);
  if (setns(target, CLONE_NEWNET) != 0) {
    int err = errno;
    close(self_fd);
    return throw_errno(env, "setns", NULL, err);
  }
  napi_get_global(env, &global);
  napi_call_function(env, global, argv[1], 0, NULL, &result);
  // A pending exception propagates after we are back home.
  return_or_abort(self_fd);
  return result;
}

// iproute2 makes /run/netns a shared mount so that namespaces created later
// also appear in mount namespaces that were cloned before (a lab node's).
static int prepare_run_dir(void) {
  if (mkdir(NETNS_RUN_DIR, 0755) != 0 && errno != EEXIST) return -1;
  if (mount("", NETNS_RUN_DIR, "none", MS_SHARED | MS_REC, NULL) == 0) return 0;
  if (errno != EINVAL) return -1;
  if (mount(NETNS_RUN_DIR, NETNS_RUN_DIR, "none", MS_BIND | MS_REC, NULL) != 0) return -1;
  return mount("", NETNS_RUN_DIR, "none", MS_SHARED | MS_REC, NULL);
}

// The one argument of createNetns/deleteNetns: a name for /run/netns, as `ip netns` accepts it.
static int netns_path_arg(napi_env env, napi_callback_info info, const char *fn, char *path, size_t len) {
  size_t argc = 1;
  napi_value argv[1];
  char name[256];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || get_path_arg(env, argv[0], name, sizeof name) != 0 || strchr(name, '/') ||
      strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s(name): a non-empty name without '/' is required", fn);
    napi_throw_type_error(env, NULL, msg);
    return -1;
  }
  snprintf(path, len, "%s/%s", NETNS_RUN_DIR, name);
  return 0;
}

// createNetns(name): a new namespace pinned at /run/netns/<name>, as `ip netns add` does.
static napi_value create_netns(napi_env env, napi_callback_info info) {
  char path[512];
  if (netns_path_arg(env, info, "createNetns", path, sizeof path) != 0) return NULL;
  if (prepare_run_dir() != 0) return throw_errno(env, "mount", NETNS_RUN_DIR, errno);
  int fd = open(path, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "create", path, errno);
  close(fd);
  int self_fd = current_netns_fd();
  if (self_fd < 0) {
    int err = errno;
    unlink(path);
    return throw_errno(env, "open", "/proc/thread-self/ns/net", err);
  }
  if (unshare(CLONE_NEWNET) != 0) {
    int err = errno;
    close(self_fd);
    unlink(path);
    return throw_errno(env, "unshare", path, err);
  }
  int err = 0;
  if (mount("/proc/thread-self/ns/net", path, "none", MS_BIND, NULL) != 0) err = errno;
  return_or_abort(self_fd);
  if (err != 0) {
    unlink(path);
    return throw_errno(env, "mount", path, err);
  }
  return NULL;
}

// deleteNetns(name): unpin it; the kernel frees it when nothing else holds it.
static napi_value delete_netns(napi_env env, napi_callback_info info) {
  char path[512];
  if (netns_path_arg(env, info, "deleteNetns", path, sizeof path) != 0) return NULL;
  if (umount2(path, MNT_DETACH) != 0 && errno != EINVAL) return throw_errno(env, "umount", path, errno);
  if (unlink(path) != 0) return throw_errno(env, "unlink", path, errno);
  return NULL;
}

// tryLock(fd, exclusive): flock(LOCK_NB); true when taken, false when another
// holder has it. host-local's store is locked with flock by the reference
// plugins, and Node has no flock: twill must take the very same lock.
static napi_value try_lock(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], out;
  int32_t fd;
  bool exclusive;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_bool(env, argv[1], &exclusive) != napi_ok) {
    napi_throw_type_error(env, NULL, "tryLock(fd, exclusive)");
    return NULL;
  }
  int rc;
  do {
    rc = flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0 && errno != EWOULDBLOCK) return throw_errno(env, "flock", NULL, errno);
  napi_get_boolean(env, rc == 0, &out);
  return out;
}

static napi_value unlock(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok) {
    napi_throw_type_error(env, NULL, "unlock(fd)");
    return NULL;
  }
  if (flock(fd, LOCK_UN) != 0) return throw_errno(env, "flock", NULL, errno);
  return NULL;
}

// execv(file, argv): replaces this process (same pid, same environment) with
// another program, and returns only on failure. Node 20 has no process.execve:
// the agent uses it to restart itself with V8 flags, keeping the pid that a
// supervisor or `ip netns exec` knows.
static napi_value exec_v(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value args[2];
  napi_get_cb_info(env, info, &argc, args, NULL, NULL);
  char file[4096];
  size_t len;
  uint32_t n;
  bool isArray = false;
  if (argc < 2 || napi_get_value_string_utf8(env, args[0], file, sizeof file, &len) != napi_ok ||
      napi_is_array(env, args[1], &isArray) != napi_ok || !isArray || napi_get_array_length(env, args[1], &n) != napi_ok || n == 0) {
    napi_throw_type_error(env, NULL, "execv(file, argv)");
    return NULL;
  }
  char **argv = calloc(n + 1, sizeof(char *));
  if (!argv) return throw_errno(env, "execv", file, ENOMEM);
  for (uint32_t i = 0; i < n; i++) {
    napi_value item;
    size_t itemLen;
    if (napi_get_element(env, args[1], i, &item) != napi_ok || napi_get_value_string_utf8(env, item, NULL, 0, &itemLen) != napi_ok) {
      napi_throw_type_error(env, NULL, "execv: argv must hold strings");
      goto fail;
    }
    argv[i] = malloc(itemLen + 1);
    if (!argv[i]) {
      throw_errno(env, "execv", file, ENOMEM);
      goto fail;
    }
    napi_get_value_string_utf8(env, item, argv[i], itemLen + 1, &itemLen);
  }
  // libuv made the standard streams non-blocking; the new program expects them as
  // a shell hands them over (a write to a full pipe would fail with EAGAIN).
  for (int fd = 0; fd <= 2; fd++) {
    int flags = fcntl(fd, F_GETFL);
    if (flags != -1 && (flags & O_NONBLOCK)) fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    int fdflags = fcntl(fd, F_GETFD);
    if (fdflags != -1 && (fdflags & FD_CLOEXEC)) fcntl(fd, F_SETFD, fdflags & ~FD_CLOEXEC);
  }
  execv(file, argv);
  throw_errno(env, "execv", file, errno);
fail:
  for (uint32_t i = 0; i < n; i++) free(argv[i]);
  free(argv);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"runInNetns", NULL, run_in_netns, NULL, NULL, NULL, napi_default, NULL},
    {"createNetns", NULL, create_netns, NULL, NULL, NULL, napi_default, NULL},
    {"deleteNetns", NULL, delete_netns, NULL, NULL, NULL, napi_default, NULL},
    {"tryLock", NULL, try_lock, NULL, NULL, NULL, napi_default, NULL},
    {"unlock", NULL, unlock, NULL, NULL, NULL, napi_default, NULL},
    {"execv", NULL, exec_v, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
