"""A thin ctypes binding to the system libbpf (``libbpf.so.1``, Debian's libbpf1 package).

Only what the observer needs: open an object file, size maps and set ``.rodata`` before
load, load (CO-RE relocation against the running kernel's BTF), attach programs, poke maps,
and consume a ring buffer. libbpf's own messages (including the verifier log of a rejected
program) are captured, not printed, so a failure can be reported with its reason.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import threading
from collections.abc import Callable

_c_void_p = ctypes.c_void_p
_c_char_p = ctypes.c_char_p

#: ``int (*ring_buffer_sample_fn)(void *ctx, void *data, size_t size)``
SAMPLE_FN = ctypes.CFUNCTYPE(ctypes.c_int, _c_void_p, _c_void_p, ctypes.c_size_t)
_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, _c_char_p, _c_void_p)


class LibbpfError(OSError):
    """A libbpf call failed; ``log`` holds what libbpf (and the verifier) said."""

    def __init__(self, what: str, err: int, log: str = "") -> None:
        msg = f"{what}: {os.strerror(err) if err else 'failed'}"
        super().__init__(err, msg)
        self.what = what
        self.log = log

    def __str__(self) -> str:
        return self.args[1] if len(self.args) > 1 else super().__str__()


class _OpenOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("object_name", _c_char_p),
        ("relaxed_maps", ctypes.c_bool),
        ("pin_root_path", _c_char_p),
        ("_stub", ctypes.c_uint32),
        ("kconfig", _c_char_p),
        ("btf_custom_path", _c_char_p),
        ("kernel_log_buf", _c_void_p),
        ("kernel_log_size", ctypes.c_size_t),
        ("kernel_log_level", ctypes.c_uint32),
    ]


_lib: ctypes.CDLL | None = None
_lib_error: str | None = None
_lib_lock = threading.Lock()
_log_lines: list[str] = []
_print_cb = None  # keep the ctypes callback alive for the life of the process


def _bind(lib: ctypes.CDLL) -> None:
    def fn(name: str, restype: object, *argtypes: object) -> None:
        f = getattr(lib, name)
        f.restype = restype
        f.argtypes = list(argtypes)

    i, u32, sz = ctypes.c_int, ctypes.c_uint32, ctypes.c_size_t
    p = _c_void_p
    fn("libbpf_set_print", p, _PRINT_FN)
    fn("bpf_object__open_file", p, _c_char_p, ctypes.POINTER(_OpenOpts))
    fn("bpf_object__load", i, p)
    fn("bpf_object__close", None, p)
    fn("bpf_object__find_map_by_name", p, p, _c_char_p)
    fn("bpf_object__next_map", p, p, p)
    fn("bpf_object__find_program_by_name", p, p, _c_char_p)
    fn("bpf_map__name", _c_char_p, p)
    fn("bpf_map__fd", i, p)
    fn("bpf_map__set_max_entries", i, p, u32)
    fn("bpf_map__initial_value", p, p, ctypes.POINTER(sz))
    fn("bpf_program__attach", p, p)
    fn("bpf_program__set_autoload", i, p, ctypes.c_bool)
    fn("bpf_program__fd", i, p)
    fn("bpf_link__destroy", i, p)
    fn("bpf_map_update_elem", i, i, p, p, ctypes.c_uint64)
    fn("bpf_map_lookup_elem", i, i, p, p)
    fn("bpf_map_delete_elem", i, i, p)
    fn("bpf_map_get_next_key", i, i, p, p)
    u32p = ctypes.POINTER(u32)
    fn("bpf_map_lookup_batch", i, i, p, p, p, p, u32p, p)
    fn("bpf_map_update_batch", i, i, p, p, u32p, p)
    fn("ring_buffer__new", p, i, SAMPLE_FN, p, p)
    fn("ring_buffer__poll", i, p, i)
    fn("ring_buffer__consume", i, p)
    fn("ring_buffer__free", None, p)
    fn("ring_buffer__epoll_fd", i, p)
    fn("libbpf_num_possible_cpus", i)


def lib() -> ctypes.CDLL:
    """The loaded libbpf, or raise OSError saying why it cannot be loaded."""
    global _lib, _lib_error, _print_cb
    with _lib_lock:
        if _lib is not None:
            return _lib
        if _lib_error is not None:
            raise OSError(_lib_error)
        name = "libbpf.so.1"
        try:
            handle = ctypes.CDLL(name, use_errno=True)
            _bind(handle)
        except (OSError, AttributeError) as exc:
            found = ctypes.util.find_library("bpf")
            _lib_error = f"cannot load {name} (apt install libbpf1): {exc}" + (
                f"; found {found}" if found else ""
            )
            raise OSError(_lib_error) from None
        libc = ctypes.CDLL(None)
        vsnprintf = libc.vsnprintf
        vsnprintf.restype = ctypes.c_int
        vsnprintf.argtypes = [_c_char_p, ctypes.c_size_t, _c_char_p, _c_void_p]
        buf = ctypes.create_string_buffer(8192)

        def _print(level: int, fmt: bytes, args: int) -> int:
            # va_list is passed as a pointer on x86_64/aarch64: vsnprintf formats it.
            try:
                vsnprintf(buf, len(buf), fmt, args)
                _log_lines.append(buf.value.decode(errors="replace"))
                del _log_lines[:-400]
            except Exception:  # never let a log line break a load
                pass
            return 0

        _print_cb = _PRINT_FN(_print)
        handle.libbpf_set_print(_print_cb)
        _lib = handle
        return handle


def take_log() -> str:
    """libbpf's messages since the last call (verifier log included), as one string."""
    text = "".join(_log_lines)
    _log_lines.clear()
    return text


def _err(default: int = errno.EINVAL) -> int:
    return ctypes.get_errno() or default


class Map:
    """A loaded map, addressed by fd, with fixed-size keys and values."""

    def __init__(self, name: str, fd: int, key_size: int, value_size: int) -> None:
        self.name, self.fd, self.key_size, self.value_size = name, fd, key_size, value_size

    def update(self, key: bytes | None, value: bytes, flags: int = 0) -> None:
        """Set ``key`` to ``value``; ``key=None`` pushes onto a queue/stack map."""
        if lib().bpf_map_update_elem(self.fd, key, value, flags) != 0:
            raise LibbpfError(f"update map {self.name}", _err())

    def lookup(self, key: bytes) -> bytes | None:
        out = ctypes.create_string_buffer(self.value_size)
        if lib().bpf_map_lookup_elem(self.fd, key, out) != 0:
            return None
        return out.raw

    def lookup_range(self, start: int, count: int) -> list[bytes]:
        """Values of the array keys ``start .. start+count-1``: one syscall (batch), or
        one per key where the kernel has no batch ops."""
        keys = ctypes.create_string_buffer(4 * count)
        values = ctypes.create_string_buffer(self.value_size * count)
        n = ctypes.c_uint32(count)
        prev = ctypes.c_uint32(start - 1)  # a batch starts *after* in_batch
        nxt = ctypes.c_uint32()
        rc = lib().bpf_map_lookup_batch(
            self.fd, ctypes.byref(prev) if start else None, ctypes.byref(nxt), keys, values,
            ctypes.byref(n), None,
        )  # fmt: skip
        vs = self.value_size
        if (rc == 0 or ctypes.get_errno() == errno.ENOENT) and n.value == count:
            return [values.raw[i * vs : (i + 1) * vs] for i in range(count)]
        out = []
        for k in range(start, start + count):
            out.append(self.lookup(k.to_bytes(4, "little")) or bytes(vs))
        return out

    def update_range(self, start: int, values: list[bytes]) -> None:
        """Set array keys ``start ..`` to ``values`` (batch where the kernel has it)."""
        count = len(values)
        keys = b"".join((start + i).to_bytes(4, "little") for i in range(count))
        n = ctypes.c_uint32(count)
        if lib().bpf_map_update_batch(self.fd, keys, b"".join(values), ctypes.byref(n), None) == 0:
            return
        for i, value in enumerate(values):
            self.update((start + i).to_bytes(4, "little"), value)

    def delete(self, key: bytes) -> bool:
        return lib().bpf_map_delete_elem(self.fd, key) == 0

    def all_keys(self) -> list[bytes]:
        out: list[bytes] = []
        cur = None
        nxt = ctypes.create_string_buffer(self.key_size)
        while lib().bpf_map_get_next_key(self.fd, cur, nxt) == 0:
            out.append(nxt.raw)
            cur = ctypes.create_string_buffer(nxt.raw, self.key_size)
            if len(out) > 1 << 20:
                break
        return out


class BpfObject:
    """One BPF object file: open -> configure -> load -> attach; ``close`` undoes it all."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lib = lib()
        take_log()
        self._logbuf = ctypes.create_string_buffer(1 << 20)
        opts = _OpenOpts(sz=ctypes.sizeof(_OpenOpts))
        opts.kernel_log_buf = ctypes.cast(self._logbuf, _c_void_p)
        opts.kernel_log_size = len(self._logbuf)
        self._obj = self._lib.bpf_object__open_file(path.encode(), ctypes.byref(opts))
        if not self._obj:
            raise LibbpfError(f"open {path}", _err(errno.ENOENT), take_log())
        self._links: list[int] = []
        self.loaded = False

    # -- before load ---------------------------------------------------------------------
    def _map_ptr(self, name: str) -> int:
        ptr = self._lib.bpf_object__find_map_by_name(self._obj, name.encode())
        if not ptr:
            raise LibbpfError(f"map {name} not in {self.path}", errno.ENOENT)
        return ptr

    def has_map(self, name: str) -> bool:
        return bool(self._lib.bpf_object__find_map_by_name(self._obj, name.encode()))

    def set_max_entries(self, name: str, n: int) -> None:
        if self._lib.bpf_map__set_max_entries(self._map_ptr(name), n) != 0:
            raise LibbpfError(f"resize map {name}", _err())

    def set_rodata(self, data: bytes) -> None:
        """Overwrite the start of the object's ``.rodata`` (the ``const volatile`` config)."""
        ptr = self._lib.bpf_object__next_map(self._obj, None)
        while ptr:
            name = (self._lib.bpf_map__name(ptr) or b"").decode()
            if name.endswith(".rodata"):
                size = ctypes.c_size_t()
                base = self._lib.bpf_map__initial_value(ptr, ctypes.byref(size))
                if not base or size.value < len(data):
                    raise LibbpfError(".rodata smaller than the config", errno.EINVAL)
                ctypes.memmove(base, data, len(data))
                return
            ptr = self._lib.bpf_object__next_map(self._obj, ptr)
        raise LibbpfError(f"no .rodata in {self.path}", errno.ENOENT)

    def set_autoload(self, prog: str, on: bool) -> None:
        """Load ``prog`` with the object or not (before load)."""
        ptr = self._lib.bpf_object__find_program_by_name(self._obj, prog.encode())
        if not ptr or self._lib.bpf_program__set_autoload(ptr, on) != 0:
            raise LibbpfError(f"program {prog} not in {self.path}", errno.ENOENT)

    def load(self) -> None:
        if self._lib.bpf_object__load(self._obj) != 0:
            err = _err()
            log = take_log()
            kernel_log = self._logbuf.value.decode(errors="replace")
            raise LibbpfError(f"load {os.path.basename(self.path)}", err, log + kernel_log)
        self.loaded = True
        self._logbuf = None  # type: ignore[assignment]

    # -- after load ----------------------------------------------------------------------
    def attach(self, prog: str) -> None:
        ptr = self._lib.bpf_object__find_program_by_name(self._obj, prog.encode())
        if not ptr:
            raise LibbpfError(f"program {prog} not in {self.path}", errno.ENOENT)
        link = self._lib.bpf_program__attach(ptr)
        if not link:
            raise LibbpfError(f"attach {prog}", _err(), take_log())
        self._links.append(link)

    def prog_fd(self, prog: str) -> int:
        ptr = self._lib.bpf_object__find_program_by_name(self._obj, prog.encode())
        return self._lib.bpf_program__fd(ptr) if ptr else -1

    def map(self, name: str, key_size: int, value_size: int) -> Map:
        fd = self._lib.bpf_map__fd(self._map_ptr(name))
        if fd < 0:
            raise LibbpfError(f"map {name} has no fd", errno.EBADF)
        return Map(name, fd, key_size, value_size)

    def close(self) -> None:
        for link in self._links:
            self._lib.bpf_link__destroy(link)
        self._links = []
        if self._obj:
            self._lib.bpf_object__close(self._obj)
            self._obj = None


class RingBuffer:
    """A libbpf ring buffer over one map fd; ``callback(bytes)`` gets each record."""

    def __init__(self, map_fd: int, callback: Callable[[int, int], None]) -> None:
        self._lib = lib()

        def _sample(_ctx: int, data: int, size: int) -> int:
            callback(data, size)
            return 0

        self._cb = SAMPLE_FN(_sample)  # referenced for as long as the ring buffer lives
        self._rb = self._lib.ring_buffer__new(map_fd, self._cb, None, None)
        if not self._rb:
            raise LibbpfError("ring_buffer__new", _err(), take_log())

    def poll(self, timeout_ms: int) -> int:
        return self._lib.ring_buffer__poll(self._rb, timeout_ms)

    def epoll_fd(self) -> int:
        """An fd that polls readable when records are waiting (libbpf's own epoll fd)."""
        return self._lib.ring_buffer__epoll_fd(self._rb)

    def consume(self) -> int:
        return self._lib.ring_buffer__consume(self._rb)

    def free(self) -> None:
        if self._rb:
            self._lib.ring_buffer__free(self._rb)
            self._rb = None


def possible_cpus() -> int:
    n = lib().libbpf_num_possible_cpus()
    if n <= 0:
        raise LibbpfError("libbpf_num_possible_cpus", -n)
    return n


def recursion_misses(prog_fd: int) -> int:
    """How often the kernel skipped this program because it was already running on the CPU
    (a preempted instance): each skip is an unseen event, so it counts as lost."""
    try:
        with open(f"/proc/self/fdinfo/{prog_fd}") as f:
            for line in f:
                if line.startswith("recursion_misses:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0
