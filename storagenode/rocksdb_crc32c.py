"""RocksDB's CRC32C on the CPU's CRC32 instruction, switched in when a storage node starts.

Why: RocksDB checksums every WAL record and every blob record with CRC32C. On x86, RocksDB
chooses its CRC32C code at compile time (``util/crc32c.cc``: "runtime detection no longer
supported on x86"), and none of the rocksdict wheels checked (0.3.20 through 0.3.29, and the same
author's speedict 0.3.12) is compiled with SSE4.2. So every byte a volume stores is checksummed by
the table-driven software loop, twice (WAL, then the blob file at flush). During 256 MiB PUTs to
the 14-node dev cluster that loop was 29% of the storage nodes' CPU (``perf``, 2026-11-23), about
2.3 CPU-seconds per GB stored. With hardware CRC32C the nodes spent 5.3-5.6 CPU-s/GB instead of
7.3-7.8, and the PUTs ran 121-122 MB/s instead of 102-110.

What: before any volume opens, the first 12 bytes of ``rocksdb::crc32c::Extend(uint32_t crc,
const char* data, size_t n)`` inside rocksdict's shared object become an absolute jump
(``movabs rax, target; jmp rax``) to ``crc32c_extend`` of Google's crc32c library, the one the
``google-crc32c`` wheel bundles. That function has the same C signature and the same contract
(the CRC32C, Castagnoli polynomial, of ``data`` continuing from ``crc``; both libraries come from
the LevelDB authors) and picks its SSE4.2 code at run time. The checksums are the same numbers,
so volumes are byte-for-byte what the software loop writes: either kind of process reads the
other's volumes.

Safety: the switch happens only on x86-64 Linux with SSE4.2, only when both symbols are found, and
only after the original ``Extend`` and ``crc32c_extend`` agree on a set of test inputs. After the
jump is written, the same inputs go through the patched entry point; any difference restores the
original bytes. It must run before RocksDB starts any thread (no volume open yet), so no thread can
be executing the bytes being rewritten: ``storagenode.server.main`` calls it before it opens the
volumes. Whatever the outcome, the node runs; ``coffer_storagenode_rocksdb_hardware_crc32c`` (1 or
0) and a log line say which code it got and why.

ELF layout (symbol table entries, ``Elf64_Sym``): System V ABI, "Object Files", chapter 4
(https://refspecs.linuxfoundation.org/elf/gabi4+/ch4.symtab.html).
"""

from __future__ import annotations

import ctypes
import glob
import mmap
import os
import platform
import random
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Gauge

#: The mangled name of ``rocksdb::crc32c::Extend(unsigned int, char const*, unsigned long)``.
ROCKSDB_EXTEND_SYMBOL = "_ZN7rocksdb6crc32c6ExtendEjPKcm"
#: An exported symbol of rocksdict's extension, used to find where the object is loaded.
ROCKSDICT_INIT_SYMBOL = "PyInit_rocksdict"
#: ``movabs rax, imm64`` (REX.W B8) then ``jmp rax`` (FF E0): rax carries no argument in the
#: System V AMD64 calling convention, so clobbering it at a function's entry is safe.
_JUMP_PREFIX = b"\x48\xb8"
_JUMP_SUFFIX = b"\xff\xe0"
JUMP_BYTES = len(_JUMP_PREFIX) + 8 + len(_JUMP_SUFFIX)
_ELF64_SYMBOL = struct.Struct("<IBBHQQ")  # st_name, st_info, st_other, st_shndx, st_value, st_size
_STT_FUNC = 2
_PROT_READ, _PROT_WRITE, _PROT_EXEC = 1, 2, 4
_EXTEND_TYPE = ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_size_t)

HARDWARE_CRC32C = Gauge(
    "coffer_storagenode_rocksdb_hardware_crc32c",
    "1 when this node's RocksDB computes CRC32C with the CPU's CRC32 instruction, 0 when it uses "
    "RocksDB's built-in software loop",
)


@dataclass(frozen=True, slots=True)
class Crc32cSwitch:
    """The outcome of ``use_hardware_crc32c``: ``hardware`` tells whether RocksDB now uses the
    hardware code; ``reason`` says why not (or what it switched to), for the node's log."""

    hardware: bool
    reason: str


_outcome: Crc32cSwitch | None = None


def use_hardware_crc32c() -> Crc32cSwitch:
    """Switch rocksdict's RocksDB to hardware CRC32C in this process (see the module docstring).

    Call it before any RocksDB database is opened in the process; later calls return the first
    outcome. A failure leaves RocksDB's own code in place and is reported in the returned
    ``Crc32cSwitch`` and the ``coffer_storagenode_rocksdb_hardware_crc32c`` gauge.

    Raises:
        RuntimeError: only if a switched entry gave other checksums and could not be restored.
    """
    global _outcome
    if _outcome is None:
        try:
            _outcome = _switch()
        except (OSError, ImportError, ValueError, AttributeError) as exc:
            _outcome = Crc32cSwitch(False, f"kept RocksDB's software CRC32C: {exc}")
        HARDWARE_CRC32C.set(1 if _outcome.hardware else 0)
    return _outcome


def _switch() -> Crc32cSwitch:
    if not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "AMD64"):
        return Crc32cSwitch(False, f"kept RocksDB's software CRC32C: no switch for {sys.platform}/"
                                   f"{platform.machine()}")
    if not cpu_has_sse42():
        # google-crc32c would fall back to its own table-driven loop: nothing to gain.
        return Crc32cSwitch(False, "kept RocksDB's software CRC32C: the CPU has no SSE4.2")
    target = _address_of(ctypes.CDLL(crc32c_library_path()), "crc32c_extend")
    return patch_function(rocksdb_extend_address(), target)


def rocksdb_extend_address() -> int:
    """Where ``rocksdb::crc32c::Extend`` sits in this process: its offset in rocksdict's shared
    object plus the object's load bias (taken from the exported ``PyInit_rocksdict``).

    Raises:
        ValueError: a symbol is missing, or ``Extend`` is shorter than the jump.
        OSError: the shared object cannot be read.
    """
    import rocksdict.rocksdict as extension

    extend_offset, extend_size = function_symbol(extension.__file__, ROCKSDB_EXTEND_SYMBOL)
    init_offset, _ = function_symbol(extension.__file__, ROCKSDICT_INIT_SYMBOL)
    if extend_size < JUMP_BYTES:
        raise ValueError(f"{ROCKSDB_EXTEND_SYMBOL} is {extend_size} bytes, too short for a jump")
    rocksdict_library = ctypes.CDLL(extension.__file__)  # already loaded: the same handle
    return _address_of(rocksdict_library, ROCKSDICT_INIT_SYMBOL) - init_offset + extend_offset


def cpu_has_sse42(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the first ``flags`` line of ``cpuinfo`` (Linux's CPU description) lists ``sse4_2``
    (the CRC32 instruction). False when no such line exists. Raises ``OSError`` if unreadable."""
    with open(cpuinfo, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if line.startswith("flags"):
                return "sse4_2" in line.split()
    return False


def crc32c_library_path() -> str:
    """Path of the ``libcrc32c`` shared object inside the installed ``google-crc32c`` wheel.

    Raises:
        ImportError: ``google_crc32c`` is not installed.
        ValueError: the wheel holds no ``libcrc32c`` (a build without the C library).
    """
    import google_crc32c

    package_directory = os.path.dirname(os.path.abspath(google_crc32c.__file__))
    # auditwheel puts a wheel's bundled libraries in <package>.libs beside the package.
    candidates = sorted(glob.glob(os.path.join(os.path.dirname(package_directory), "google_crc32c.libs",
                                               "libcrc32c*.so*")))
    if not candidates:
        raise ValueError("google-crc32c has no bundled libcrc32c")
    return candidates[0]


def function_symbol(path: str, name: str) -> tuple[int, int]:
    """``(address in the object, size in bytes)`` of function ``name`` in ELF shared object ``path``,
    from its full symbol table (``.symtab``, local symbols included) or else its dynamic one.

    Raises:
        ValueError: ``path`` is not ELF, or no function of that name is listed.
        OSError: ``path`` cannot be read.
    """
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    wanted = name.encode() + b"\0"
    with open(path, "rb") as stream:
        try:
            elf = ELFFile(stream)
        except ELFError as exc:
            raise ValueError(f"{path} is not an ELF object: {exc}") from exc
        if elf.elfclass != 64 or not elf.little_endian:
            raise ValueError(f"{path} is not a 64-bit little-endian ELF object")
        for table_name in (".symtab", ".dynsym"):
            table = elf.get_section_by_name(table_name)
            if table is None:
                continue
            strings = elf.get_section(table["sh_link"]).data()
            # Parsing the fixed-size entries directly: pyelftools' name lookup decodes all
            # ~20,000 symbols of rocksdict first (0.5 s at every node start).
            name_offsets = set()
            position = strings.find(wanted)
            while position >= 0:
                if position == 0 or strings[position - 1] == 0:
                    name_offsets.add(position)
                position = strings.find(wanted, position + 1)
            if not name_offsets:
                continue
            for entry in _ELF64_SYMBOL.iter_unpack(table.data()):
                name_offset, info, _other, section_index, value, size = entry
                if name_offset in name_offsets and info & 0xF == _STT_FUNC and section_index != 0:
                    return value, size
    raise ValueError(f"{path} lists no function {name}")


def patch_function(address: int, target: int) -> Crc32cSwitch:
    """Make the function at ``address`` jump to ``target`` if both compute the same CRC32C on the
    test inputs, before and after the jump is written; otherwise leave (or put back) the original
    bytes. Both must have the signature ``uint32_t (uint32_t crc, const char* data, size_t n)``.

    Raises:
        OSError: the code pages cannot be made writable (``mprotect`` refused, e.g. by SELinux);
            nothing was changed.
        RuntimeError: the jump gave other checksums and the original bytes could not be put back
            (the process must not use RocksDB).
    """
    original = _EXTEND_TYPE(address)
    replacement = _EXTEND_TYPE(target)
    inputs = _test_inputs()
    expected = [_call(original, crc, data) for crc, data in inputs]
    if [_call(replacement, crc, data) for crc, data in inputs] != expected:
        return Crc32cSwitch(False, "kept RocksDB's software CRC32C: crc32c_extend disagrees with it")
    saved = ctypes.string_at(address, JUMP_BYTES)
    _write_code(address, _JUMP_PREFIX + struct.pack("<Q", target) + _JUMP_SUFFIX)
    if [_call(original, crc, data) for crc, data in inputs] != expected:
        try:
            _write_code(address, saved)
        except OSError as exc:
            # Left in place, the jump would give RocksDB wrong checksums: the node must not start.
            raise RuntimeError("the switched CRC32C gave other checksums and RocksDB's code could not be put "
                               "back; start the node with --software-crc32c") from exc
        return Crc32cSwitch(False, "kept RocksDB's software CRC32C: the switched code gave other checksums")
    return Crc32cSwitch(True, "RocksDB's CRC32C runs on google-crc32c's hardware code")


def _test_inputs() -> list[tuple[int, bytes]]:
    # Empty, the standard check value's input, every alignment and tail length up to 64 bytes,
    # and a fragment-sized buffer, each from a fixed and from a random starting CRC.
    generator = random.Random(0x1EDC6F41)
    buffers = [b"", b"123456789"]
    buffers += [generator.randbytes(length) for length in range(1, 65)]
    buffers.append(generator.randbytes(420 * 1024 + 7))
    return [(start, data) for data in buffers for start in (0, generator.getrandbits(32))]


def _call(function: Callable[[int, int, int], int], crc: int, data: bytes) -> int:
    buffer = ctypes.create_string_buffer(data, len(data))
    return int(function(crc, ctypes.addressof(buffer), len(data)))


def _address_of(library: ctypes.CDLL, name: str) -> int:
    address = ctypes.cast(getattr(library, name), ctypes.c_void_p).value
    if not address:
        raise ValueError(f"{name} has no address")
    return address


def _write_code(address: int, code: bytes) -> None:
    """Copy ``code`` over the machine code at ``address``: the pages become writable for the copy
    and read-and-execute again after it (should that last step fail, they stay writable too,
    which changes nothing the process runs).

    Raises:
        OSError: ``mprotect`` refused to make the pages writable; nothing was copied.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    first_page = address & ~(mmap.PAGESIZE - 1)
    length = address + len(code) - first_page
    if libc.mprotect(first_page, length, _PROT_READ | _PROT_WRITE | _PROT_EXEC) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"mprotect (make code writable): {os.strerror(error)}")
    ctypes.memmove(address, code, len(code))
    libc.mprotect(first_page, length, _PROT_READ | _PROT_EXEC)
