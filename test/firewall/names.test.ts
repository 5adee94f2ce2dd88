import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { goQuote, masqChainName, masqComment, nftInstanceHash, nftMasqComment, parseMasqComment, parseNftMasqComment } from '../../src/firewall/names.js';
import { parseSave, planChange, quoteArg, renderRule, tokenize } from '../../src/firewall/iptables.js';

// Computed by Go (crypto/sha512, fmt %q) with the reference's formulas
// (pkg/utils/utils.go FormatChainName/FormatComment, pkg/ip/ipmasq_nftables_linux.go hashForInstance).
const WEIRD_ID = "id\n\t\x00\x7fé\u00a0😀\u200b'";
const GO_VECTORS = [
  { network: 'cbr0', id: 'abc', chain: 'CNI-64e75f641d11615844d681b7', comment: 'name: "cbr0" id: "abc"', nft: 'cb6e746fae1a4d6c-e65086f8a75535c6' },
  {
    network: 'my-net',
    id: '0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef',
    chain: 'CNI-ab222a98ec74652c2eb31e24',
    comment: 'name: "my-net" id: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"',
    nft: '0449ee77eb3cb458-848025970da6a998',
  },
  { network: 'we"ird\\net', id: WEIRD_ID, chain: 'CNI-509edac112ccab8465c12a75', comment: String.raw`name: "we\"ird\\net" id: "id\n\t\x00\x7fé\u00a0😀\u200b'"`, nft: '398ddf8a78cf7354-83a210a702c07fee' },
];

describe('firewall names (as the reference computes them)', () => {
  for (const v of GO_VECTORS) {
    it(`chain, comment and nft hash for ${JSON.stringify(v.network)} / ${JSON.stringify(v.id.slice(0, 12))}`, () => {
      assert.equal(masqChainName(v.network, v.id), v.chain);
      assert.equal(masqChainName(v.network, v.id).length, 28);
      assert.equal(masqComment(v.network, v.id), v.comment);
      assert.equal(nftInstanceHash(v.network, 'eth0', v.id), v.nft);
      assert.deepEqual(parseMasqComment(v.comment), { network: v.network, containerId: v.id }, 'the comment reads back');
    });
  }

  it('quotes as Go %q: escapes, \\x, \\u, \\U, printable Unicode kept', () => {
    assert.equal(goQuote('a"b\\c'), String.raw`"a\"b\\c"`);
    assert.equal(goQuote('\x07\b\f\n\r\t\v\x1b\x7f'), String.raw`"\a\b\f\n\r\t\v\x1b\x7f"`);
    assert.equal(goQuote('\u2028 \u{e0001} ü'), String.raw`"\u2028 \U000e0001 ü"`);
  });

  it('nft comment: hash, then the quote-stripped description, cut at 128 bytes', () => {
    assert.equal(nftMasqComment('cbr0', 'eth0', 'abc'), 'cb6e746fae1a4d6c-e65086f8a75535c6, net: cbr0, if: eth0, id: abc');
    assert.equal(nftMasqComment('a"b', 'eth0', 'c"d').endsWith('net: ab, if: eth0, id: cd'), true);
    const long = nftMasqComment('cbr0', 'eth0', 'x'.repeat(200));
    assert.equal(long.length, 128);
    assert.deepEqual(parseNftMasqComment(long), { id: nftInstanceHash('cbr0', 'eth0', 'x'.repeat(200)), network: 'cbr0', ifname: 'eth0', containerId: null });
    assert.equal(Buffer.byteLength(nftMasqComment('cbr0', 'eth0', 'é'.repeat(100))) <= 128, true, 'never splits a character');
  });
});

describe('iptables-restore lines', () => {
  it('tokenizes as iptables-restore does, and quoting round-trips', () => {
    const line = String.raw`-A POSTROUTING -s 10.244.1.5/32 -m comment --comment "name: \"cbr0\" id: \"a'b\\c\"" -j CNI-x`;
    const tokens = tokenize(line);
    assert.deepEqual(tokens, ['-A', 'POSTROUTING', '-s', '10.244.1.5/32', '-m', 'comment', '--comment', String.raw`name: "cbr0" id: "a'b\c"`, '-j', 'CNI-x']);
    assert.deepEqual(tokenize(renderRule('POSTROUTING', tokens.slice(2))), tokens);
    assert.throws(() => quoteArg('a\nb'), /line break/);
  });

  it('plans nothing when the table already holds what is wanted', () => {
    const saved = parseSave(['*nat', ':POSTROUTING ACCEPT [0:0]', ':CNI-x - [0:0]', '-A POSTROUTING -s fd00:0::5/128 -j CNI-x', '-A CNI-x -j ACCEPT', 'COMMIT'].join('\n'));
    const same = { table: 'nat', setChains: [{ name: 'CNI-x', rules: [['-j', 'ACCEPT']] }], ensureRules: [{ chain: 'POSTROUTING', rule: ['-s', 'fd00::5/128', '-j', 'CNI-x'] }] };
    assert.deepEqual(planChange(saved, same), [], 'addresses compare by value');
    assert.deepEqual(planChange(saved, { table: 'nat', deleteChains: ['CNI-x'] }), ['*nat', '-D POSTROUTING -s fd00:0::5/128 -j CNI-x', '-F CNI-x', '-X CNI-x', 'COMMIT']);
    assert.deepEqual(planChange(saved, { table: 'nat', deleteChains: ['CNI-other'] }), [], 'absent: nothing to do');
  });
});
