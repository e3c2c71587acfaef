-- nim.native.sha256: Nettle's SHA-256 of strings and lists of strings, as hex (the response
-- cache's keys). FIPS 180-2's vectors.
local spec = require "spec"
local nim = require "nim"
local test, eq, raises = spec.test, spec.eq, spec.raises
local sha256 = nim.native.sha256

test("sha256_matches_the_standard_vectors", function()
  eq(sha256(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "empty")
  eq(sha256("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "abc")
  eq(sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
    "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1", "two blocks")
  eq(sha256(("a"):rep(1000000)),
    "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0", "a million a's")
end)

test("sha256_hashes_its_parts_one_after_another", function()
  local whole = sha256("abc")
  eq(sha256("a", "bc"), whole, "two strings")
  eq(sha256({ "a", "b", "c" }), whole, "a list")
  eq(sha256("a", { "b" }, {}, "c"), whole, "mixed, an empty list")
  eq(sha256({ "a", "b", [4] = "x" }), sha256("ab"), "a list up to its length")
  eq(sha256("\0"), "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d", "a NUL")
end)

test("sha256_misuse_raises_naming_the_argument", function()
  raises(function() sha256(1) end, "bad argument #1", "string or list of strings")
  raises(function() sha256("a", { "b", 2 }) end, "bad argument #2", "[2]: string expected")
  raises(function() sha256("a", nil) end, "bad argument #2")
end)
