"""RocksDB's CRC32C switched to hardware code (``storagenode.rocksdb_crc32c``).

The switch rewrites code in rocksdict's shared object for the rest of the process, so every check
runs in a fresh interpreter of its own: the pytest process keeps RocksDB's own code.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from storagenode.server import parse_args

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the switch exists on x86-64 Linux only")

ROOT = Path(__file__).resolve().parents[3]


def run_python(code: str, *args: str) -> dict:
    """Run ``code`` in a new interpreter (repository root on the path); return the JSON it prints last."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


SWITCHED_EXTEND = """
    import ctypes, json, random
    import google_crc32c
    from prometheus_client import REGISTRY
    from storagenode import rocksdb_crc32c as module

    switch = module.use_hardware_crc32c()
    address = module.rocksdb_extend_address()
    extend = ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.c_uint32, ctypes.c_char_p, ctypes.c_size_t)(address)
    generator = random.Random(7)
    agree = True
    for length in (0, 1, 5, 9, 31, 4096, 420 * 1024 + 3, 4 * 1024 * 1024):
        data = generator.randbytes(length)
        start = generator.getrandbits(32)
        agree = agree and extend(start, data, length) == google_crc32c.extend(start, data)
    print(json.dumps({"hardware": switch.hardware, "reason": switch.reason, "agree": agree,
                      "entry": ctypes.string_at(address, 2).hex(),
                      "again": module.use_hardware_crc32c() == switch,
                      "gauge": REGISTRY.get_sample_value("coffer_storagenode_rocksdb_hardware_crc32c")}))
"""


def test_the_switch_sends_rocksdb_extend_to_hardware_code_with_the_same_checksums() -> None:
    outcome = run_python(SWITCHED_EXTEND)
    assert outcome["hardware"] is True, outcome["reason"]
    assert outcome["entry"] == "48b8"  # movabs rax, <crc32c_extend>
    assert outcome["agree"] is True
    assert outcome["again"] is True  # a second call changes nothing and reports the same
    assert outcome["gauge"] == 1


VOLUME_ROUND_TRIP = """
    import json, os, sys
    from awscrt.checksums import crc32c
    from storagenode.engine import FragmentEngine
    from storagenode import rocksdb_crc32c

    mode, volume, step = sys.argv[1:4]
    if mode == "hardware":
        assert rocksdb_crc32c.use_hardware_crc32c().hardware
    def fragment(index):
        return bytes([index]) * (420 * 1024) + index.to_bytes(4, "big")
    engine = FragmentEngine([volume])
    if step == "write":
        for index in range(6):
            data = fragment(index)
            engine.put(bytes([index]) * 32, index, 7, data, crc32c(data), 4 * 1024 * 1024)
            if index == 2:
                engine.flush()  # fragments 0-2 in a blob file, 3-5 only in the WAL
        print(json.dumps({"wrote": 6}), flush=True)
        os._exit(0)  # no close, no flush: the next open replays the WAL
    read = [engine.get(bytes([index]) * 32, index, 7).data == fragment(index) for index in range(6)]
    verified = [engine.verify(bytes([index]) * 32, index, 7) for index in range(6)]
    engine.close()
    print(json.dumps({"read": read, "verified": verified}))
"""


@pytest.mark.parametrize(("writer", "reader"), [("hardware", "software"), ("software", "hardware")])
def test_volumes_written_with_either_code_read_back_with_the_other(tmp_path: Path, writer: str, reader: str) -> None:
    volume = str(tmp_path / "volume")
    assert run_python(VOLUME_ROUND_TRIP, writer, volume, "write") == {"wrote": 6}
    outcome = run_python(VOLUME_ROUND_TRIP, reader, volume, "read")
    assert outcome == {"read": [True] * 6, "verified": [None] * 6}


DISAGREEING_REPLACEMENT = """
    import ctypes, json
    from storagenode import rocksdb_crc32c as module

    address = module.rocksdb_extend_address()
    before = ctypes.string_at(address, 16)
    # labs(crc) is no CRC32C: the switch must refuse it and leave RocksDB's code as it was.
    libc = ctypes.CDLL(None)
    switch = module.patch_function(address, ctypes.cast(libc.labs, ctypes.c_void_p).value)
    print(json.dumps({"hardware": switch.hardware, "reason": switch.reason,
                      "unchanged": ctypes.string_at(address, 16) == before}))
"""


def test_a_replacement_that_computes_other_checksums_is_refused_and_nothing_changes() -> None:
    outcome = run_python(DISAGREEING_REPLACEMENT)
    assert outcome["hardware"] is False
    assert "disagrees" in outcome["reason"]
    assert outcome["unchanged"] is True


def test_a_missing_symbol_is_a_clear_error(tmp_path: Path) -> None:
    from storagenode.rocksdb_crc32c import function_symbol

    not_elf = tmp_path / "plain.so"
    not_elf.write_bytes(b"not an ELF object")
    with pytest.raises(ValueError, match="not an ELF object"):
        function_symbol(str(not_elf), "anything")
    with pytest.raises(ValueError, match="lists no function"):
        function_symbol(sys.executable, "coffer_no_such_function")


def test_the_cpu_flags_decide_whether_there_is_a_crc32_instruction(tmp_path: Path) -> None:
    from storagenode.rocksdb_crc32c import cpu_has_sse42

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 ssse3 sse4_1 sse4_2 avx2\n")
    assert cpu_has_sse42(str(cpuinfo)) is True
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 ssse3 sse4_1\n")
    assert cpu_has_sse42(str(cpuinfo)) is False
    cpuinfo.write_text("processor\t: 0\n")
    assert cpu_has_sse42(str(cpuinfo)) is False


def test_the_software_flag_keeps_rocksdb_code_and_hardware_is_the_default() -> None:
    base = ["--node-id", "n", "--listen", "127.0.0.1:1", "--volume", "/tmp/v", "--zone", "z", "--rack", "r",
            "--host", "h", "--capacity-bytes", "1", "--metrics-port", "0"]
    assert parse_args(base).hardware_crc32c is True
    assert parse_args([*base, "--software-crc32c"]).hardware_crc32c is False
