"""The outer machine's kernel in the form that boots fastest under TCG.

Debian's bzImage carries its kernel XZ-compressed; under TCG the
decompressor alone takes about 10 s of every boot. QEMU also boots an
uncompressed ELF vmlinux through its PVH entry point (CONFIG_PVH), which
skips both the firmware's Linux loader and the decompression. So the cache
stores the vmlinux when the kernel has a PVH entry, else the bzImage.
"""

import gzip
import lzma
import struct

_XEN_NOTE_NAME = b"Xen\0"
_XEN_ELFNOTE_PHYS32_ENTRY = 18
_PT_NOTE = 4


def _payload(bzimage):
    """The kernel ELF inside a bzImage, or None for a compression we do not
    handle here."""
    position = bzimage.find(b"\xfd7zXZ\x00")
    if position >= 0:
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(bzimage[position:])
    position = bzimage.find(b"\x1f\x8b\x08\x00")
    if position >= 0:
        try:
            return gzip.decompress(bzimage[position:])
        except (OSError, EOFError):
            return None
    return None


def has_pvh_entry(elf):
    """True when a 64-bit ELF has the Xen PHYS32_ENTRY note QEMU boots by."""
    if len(elf) < 64 or elf[:5] != b"\x7fELF\x02":
        return False
    program_headers, = struct.unpack_from("<Q", elf, 0x20)
    entry_size, count = struct.unpack_from("<HH", elf, 0x36)
    for index in range(count):
        header = program_headers + index * entry_size
        kind, = struct.unpack_from("<I", elf, header)
        if kind != _PT_NOTE:
            continue
        offset, = struct.unpack_from("<Q", elf, header + 0x08)
        size, = struct.unpack_from("<Q", elf, header + 0x20)
        position, end = offset, offset + size
        while position + 12 <= end:
            name_size, description_size, note_type = struct.unpack_from("<III", elf, position)
            name = elf[position + 12:position + 12 + name_size]
            if name == _XEN_NOTE_NAME and note_type == _XEN_ELFNOTE_PHYS32_ENTRY:
                return True
            position += 12 + (name_size + 3) // 4 * 4 + (description_size + 3) // 4 * 4
    return False


def fastest_kernel(bzimage):
    """(bytes, description) of the kernel to hand to qemu -kernel."""
    try:
        elf = _payload(bzimage)
    except lzma.LZMAError:
        elf = None
    if elf is not None and has_pvh_entry(elf):
        return elf, "uncompressed vmlinux, PVH entry"
    return bzimage, "bzImage"
