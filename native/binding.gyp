{
  "targets": [
    {
      "target_name": "twill_netns",
      "sources": ["netns.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"]
    }
  ]
}
