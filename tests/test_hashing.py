"""The one hashing module: digests equal a direct hashlib computation, and the package's cache
keys and fingerprints are the ones written before it existed."""

import hashlib
import json

import numpy as np
import pytest

from sk_braintune import provenance
from sk_braintune._hashing import (
    digest_arrays,
    digest_bytes,
    digest_file,
    digest_json,
    new_hasher,
    update_array,
)


def test_array_digests_equal_hashlib_on_the_header_and_the_c_order_bytes():
    a = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))  # not C-contiguous
    b = np.zeros((0, 2))
    expected = hashlib.blake2b(digest_size=20)
    for x in (a, b):
        expected.update(f"{x.dtype}{x.shape}".encode() + np.ascontiguousarray(x).tobytes())
    assert digest_arrays(a, b) == expected.hexdigest()
    # the three headers the package uses, and none
    for header, text in (("{dtype_str}{shape}", "<f4(3, 4)"), ("({shape!r}, {dtype!r})",
                                                                repr(((3, 4), "float32"))),
                         (None, "")):
        h = update_array(new_hasher("blake2b", 16), a, header)
        direct = hashlib.blake2b(text.encode() + np.ascontiguousarray(a).tobytes(),
                                 digest_size=16)
        assert h.hexdigest() == direct.hexdigest()


def test_bytes_json_and_file_digests(tmp_path):
    assert digest_bytes("a\nb", length=24) == hashlib.sha256(b"a\nb").hexdigest()[:24]
    assert (digest_bytes(b"x", "blake2b", digest_size=32)
            == hashlib.blake2b(b"x", digest_size=32).hexdigest())
    value = {"b": [1, 2], "a": tmp_path}
    assert digest_json(value, default=str) == hashlib.sha256(
        json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
    with pytest.raises(TypeError):
        digest_json(value)  # a path is not JSON without default=str
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(range(256)) * 9000)  # two 1 MiB blocks and a partial one
    assert digest_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest_file(path, block_size=1000) == digest_file(path)
    with pytest.raises(ValueError, match="blake2b only"):
        new_hasher("sha256", digest_size=16)


def test_cache_keys_and_fingerprints_are_the_ones_written_before():
    """Digests computed by the package before the hashing module (cache keys stay valid)."""
    from sk_braintune.builtin import intents, story
    from sk_braintune.features import cache
    from sk_braintune.tuning import _checkpoint

    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert cache.hash_arrays(a) == "01bfda6474b92b2debf7e482ae9afbd21a1d2c8a"
    assert cache.key_of(model="m", layers=[1, 2]) == "480bdcc2af61efa05426e79ba7bc04b099ddd07b"
    assert (_checkpoint.data_fingerprint(a, a, ["s", "s"])
            == "4d66fbbe4877d7a70bd94a4ba5d874cd")
    assert provenance.fingerprint_arrays({"s": a}) == "blake2b:4e8739382c2e06927b74348260a7f8af"
    assert story._speech_key("hello", "en-us", 175) == "1acc1b1c74701c2b51e5e50a"
    assert intents._key({"v": 1}) == "9ab2253fc38981f5"
