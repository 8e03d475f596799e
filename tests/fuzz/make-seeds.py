#!/usr/bin/env python3
"""Writes the seed corpora of the virtio and loader fuzz targets.

    tests/fuzz/make-seeds.py [TARGET...]   (default: all of them)

Each seed is a small, well-formed program in the input language its
target's .cc file documents (the op numbers below mirror those files and
tests/fuzz/common/), so the fuzzer starts from requests that reach deep
into the device (a READ(10) answered, a TMF, a bzImage that loads) and
mutates from there. Re-run after changing an input format; the seeds are
committed.
"""
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def u8(v): return struct.pack('<B', v & 0xFF)
def u16(v): return struct.pack('<H', v & 0xFFFF)
def u32(v): return struct.pack('<I', v & 0xFFFFFFFF)
def u64(v): return struct.pack('<Q', v & 0xFFFFFFFFFFFFFFFF)


class Program:
    """Ops shared by the targets: GuestDriver ring ops at `ring_base`,
    DeviceFixture ops at `device_base` (None: the target has none)."""

    def __init__(self, ring_base, device_base=None):
        self.ring_base = ring_base
        self.device_base = device_base
        self.data = b''

    def raw(self, data):
        self.data += data
        return self

    # GuestDriver ops 0-5.
    def chain(self, ring, buffers, indirect=False):
        """buffers: list of (length, writable, content-or-None)."""
        out = u8(self.ring_base + 0) + u8(ring) + u8(len(buffers) - 1) + u8(1 if indirect else 0)
        for length, writable, content in buffers:
            out += u16(length) + u8(1 if writable else 0)
            if not writable:
                content = (content or b'').ljust(length, b'\0')[:length]
                out += content
        return self.raw(out)

    def descriptor(self, ring, index, where, address, length, flags, nxt):
        out = u8(self.ring_base + 1) + u8(ring) + u16(index) + u8(where)
        out += u64(address) if where == 2 else u16(address)
        return self.raw(out + u32(length) + u16(flags) + u16(nxt))

    def head(self, ring, head):
        return self.raw(u8(self.ring_base + 2) + u8(ring) + u16(head))

    def avail_index(self, ring, value):
        return self.raw(u8(self.ring_base + 3) + u8(ring) + u16(value))

    def poke(self, address, data):
        return self.raw(u8(self.ring_base + 4) + u32(address) + u8(len(data)) + data)

    def suppress(self, ring, flags, used_event):
        return self.raw(u8(self.ring_base + 5) + u8(ring) + u16(flags) + u16(used_event))

    # DeviceFixture ops 0-6.
    def kick(self, queue):
        return self.raw(u8(self.device_base + 0) + u8(queue))

    def notify_register(self, size, value):
        return self.raw(u8(self.device_base + 1) + u8(size - 1) + u64(value))

    def run_loop(self):
        return self.raw(u8(self.device_base + 2))

    def fail_disk(self, count, error_index=0):
        return self.raw(u8(self.device_base + 3) + u8((count - 1) | (error_index << 2)))

    def config_read(self, offset, size):
        return self.raw(u8(self.device_base + 4) + u8(offset) + u8(size - 1))

    def config_write(self, offset, size, value):
        return self.raw(u8(self.device_base + 5) + u8(offset) + u8(size - 1) + u64(value))

    def bring_up_again(self):
        return self.raw(u8(self.device_base + 6))

    def hold(self):
        return self.raw(u8(self.device_base + 7))

    def release(self):
        return self.raw(u8(self.device_base + 8))


def write_seeds(target, seeds):
    directory = os.path.join(HERE, target, 'seeds')
    os.makedirs(directory, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(directory, name), 'wb') as f:
            f.write(data)


# --- virtqueue: header (size choice, flags[, addresses]), then ops:
# ring ops 0-5, then 6 pop, 7 push oldest (u32 written), 8 publish,
# 9 serve, 10 arm kick, 11 push-and-publish-soon (u32), 12 drop.
def virtqueue_seeds():
    POP, PUSH, PUBLISH, SERVE, ARM, SOON, DROP = range(6, 13)
    seeds = {}
    p = Program(0).raw(u8(3) + u8(3))  # 8 entries, EVENT_IDX + INDIRECT
    p.chain(0, [(16, False, b'request'), (64, True, None)])
    p.raw(u8(POP) + u8(PUSH) + u32(64) + u8(PUBLISH))
    p.chain(0, [(16, False, b'a'), (32, False, b'b'), (8, True, None)], indirect=True)
    p.suppress(0, 0, 1).raw(u8(SERVE) + u8(ARM))
    seeds['event-idx-indirect'] = p.data
    p = Program(0).raw(u8(4) + u8(0))  # 16 entries, no features
    for i in range(3):
        p.chain(0, [(8, False, b'x'), (8, True, None)])
    p.raw(u8(POP) + u8(POP) + u8(SOON) + u32(8) + u8(PUSH) + u32(0) + u8(PUBLISH))
    p.suppress(0, 1, 0).raw(u8(POP) + u8(PUSH) + u32(1) + u8(PUBLISH))
    seeds['no-features'] = p.data
    p = Program(0).raw(u8(2) + u8(0))  # a loop: descriptor 0 -> 0
    p.descriptor(0, 0, 0, 0, 16, 1, 0).head(0, 0).raw(u8(POP) + u8(DROP) + u8(POP))
    seeds['loop'] = p.data
    p = Program(0).raw(u8(3) + u8(2))  # nested indirect tables
    p.descriptor(0, 0, 1, 0, 32, 4, 0)
    p.poke(0x9000, u64(0x9100) + u32(16) + u16(4) + u16(0))
    p.head(0, 0).raw(u8(POP))
    seeds['nested-indirect'] = p.data
    p = Program(0).raw(u8(3) + u8(0)).avail_index(0, 100).raw(u8(POP))
    seeds['avail-jump'] = p.data
    p = Program(0).raw(u8(0x82) + u16(7) + u8(4) + u32(0x1001) + u32(0x1ffff) + u32(0x30ff0))
    seeds['hostile-rings'] = p.data
    p = Program(0).raw(u8(3) + u8(0))
    p.descriptor(0, 0, 2, 0x1fff0, 64, 1, 1).descriptor(0, 1, 2, 0x30000, 16, 2, 0)
    p.head(0, 0).raw(u8(POP) + u8(PUSH) + u32(0) + u8(PUBLISH))
    seeds['buffer-straddles-hole'] = p.data
    return seeds


# --- virtio-blk: setup byte, wanted features (u64), then ring ops 0-5 and
# device ops 6-12.
def blk_header(kind, sector):
    return u32(kind) + u32(0) + u64(sector)


def virtio_blk_seeds():
    seeds = {}
    everything = 0xFFFFFFFFFFFFFFFF

    def start(setup=4 << 2, wanted=everything):  # 16 entries
        return Program(0, 6).raw(u8(setup) + u64(wanted))

    p = start()
    p.chain(0, [(16, False, blk_header(1, 3)), (512, False, b'written by the fuzzer'),
                (1, True, None)])
    p.chain(0, [(16, False, blk_header(0, 3)), (512, True, None), (1, True, None)])
    p.kick(0).run_loop()
    seeds['write-read'] = p.data
    p = start()
    p.chain(0, [(16, False, blk_header(0, 0)), (4096, True, None), (1, True, None)],
            indirect=True)
    p.chain(0, [(16, False, blk_header(4, 0)), (1, True, None)])
    p.chain(0, [(16, False, blk_header(8, 0)), (20, True, None), (1, True, None)])
    p.kick(0)
    seeds['indirect-flush-getid'] = p.data
    p = start()
    p.chain(0, [(16, False, blk_header(11, 0)), (16, False, u64(0) + u32(8) + u32(0)),
                (1, True, None)])
    p.chain(0, [(16, False, blk_header(13, 0)), (32, False, u64(8) + u32(8) + u32(1)
                                                 + u64(120) + u32(8) + u32(0)), (1, True, None)])
    p.chain(0, [(16, False, blk_header(99, 0)), (1, True, None)])
    p.kick(0).run_loop()
    seeds['discard-zeroes-unsupported'] = p.data
    p = start(setup=1 | (3 << 2))  # two queues of 8
    p.fail_disk(2).chain(1, [(16, False, blk_header(0, 1)), (512, True, None), (1, True, None)])
    p.chain(0, [(16, False, blk_header(1, 200)), (512, False, b''), (1, True, None)])
    p.kick(1).notify_register(2, 0).run_loop().config_read(0, 8).config_read(20, 4)
    seeds['two-queues-errors'] = p.data
    p = start(setup=2 | (4 << 2))  # read-only
    p.chain(0, [(16, False, blk_header(1, 0)), (512, False, b''), (1, True, None)])
    p.kick(0).bring_up_again()
    p.chain(0, [(8, False, blk_header(0, 0)), (1, True, None)])  # short header
    p.chain(0, [(16, False, blk_header(0, 0)), (512, True, None)])  # no status byte
    p.kick(0).run_loop()
    seeds['read-only-reset-malformed'] = p.data
    p = start()  # requests in flight across a reset, then again after it
    p.hold().chain(0, [(16, False, blk_header(0, 1)), (512, True, None), (1, True, None)])
    p.chain(0, [(16, False, blk_header(4, 0)), (1, True, None)])
    p.kick(0).run_loop().hold().kick(0).bring_up_again()
    p.hold().chain(0, [(16, False, blk_header(1, 1)), (512, False, b'z'), (1, True, None)])
    p.kick(0).run_loop().release().run_loop()
    seeds['held-across-reset'] = p.data
    return seeds


# --- virtio-scsi: setup byte, wanted features, then ring ops 0-5 and
# device ops 6-12. Queues: 0 control, 1 event, 2.. requests.
def scsi_request(cdb, lun=1, tag=1):
    lun_bytes = bytes([lun, 0, 0, 0, 0, 0, 0, 0]) if lun == 1 else bytes([lun] + [0] * 7)
    return lun_bytes + u64(tag) + bytes([0, 0, 0]) + bytes(cdb).ljust(32, b'\0')


def virtio_scsi_seeds():
    seeds = {}
    RESPONSE = 12 + 96
    REQUEST = 19 + 32

    def start(setup=4 << 3):  # 16 entries, INDIRECT_DESC and EVENT_IDX
        return Program(0, 6).raw(u8(setup) + u64(0xFFFFFFFFFFFFFFFF))

    def command(p, cdb, data_in=0, data_out=b'', queue=2, tag=1, indirect=False):
        buffers = [(REQUEST, False, scsi_request(cdb, tag=tag))]
        if data_out:
            buffers.append((len(data_out), False, data_out))
        buffers.append((RESPONSE, True, None))
        if data_in:
            buffers.append((data_in, True, None))
        return p.chain(queue, buffers, indirect)

    p = start()
    command(p, [0x12, 0, 0, 0, 96, 0], 96)                     # INQUIRY
    command(p, [0x12, 1, 0x83, 0, 255, 0], 255, tag=2)         # VPD 0x83
    command(p, [0x25] + [0] * 9, 8, tag=3)                     # READ CAPACITY(10)
    command(p, [0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0], 16, tag=4)  # REPORT LUNS
    p.kick(2).run_loop()
    seeds['probe'] = p.data
    p = start()
    command(p, [0x2A, 0, 0, 0, 0, 2, 0, 0, 1, 0], data_out=b'W' * 512)  # WRITE(10)
    command(p, [0x28, 0, 0, 0, 0, 2, 0, 0, 1, 0], 512, tag=2, indirect=True)  # READ(10)
    command(p, [0x35] + [0] * 9, tag=3)                        # SYNCHRONIZE CACHE(10)
    command(p, [0x00] * 6, tag=4)                              # TEST UNIT READY
    p.kick(2).run_loop()
    seeds['write-read'] = p.data
    p = start()
    command(p, [0x1A, 0, 0x3F, 0, 255, 0], 255)                # MODE SENSE(6)
    unmap = u16(22) + u16(16) + u32(0) + u64(4) + u32(8) + u32(0)
    command(p, [0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], data_out=unmap, tag=2)  # UNMAP
    command(p, [0x9E, 0x10] + [0] * 10 + [0, 0, 0, 32, 0, 0], 32, tag=3)  # READ CAPACITY(16)
    p.kick(2)
    seeds['mode-unmap-capacity16'] = p.data
    p = start()
    command(p, [0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0], 4096, tag=7)
    tmf = u32(0) + u32(0) + bytes([1, 0, 0, 0, 0, 0, 0, 0]) + u64(7)  # ABORT TASK tag 7
    p.chain(0, [(24, False, tmf), (1, True, None)])
    an = u32(1) + bytes([1, 0, 0, 0, 0, 0, 0, 0]) + u32(0xFF)
    p.chain(0, [(16, False, an), (5, True, None)])
    p.chain(1, [(16, True, None)])                             # an event buffer
    p.fail_disk(1).kick(0).kick(2).kick(1).run_loop()
    seeds['tmf-an-event'] = p.data
    p = start()  # a TMF and a LUN reset while commands are held in flight
    p.hold()
    command(p, [0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0], 4096, tag=7)
    command(p, [0x2A, 0, 0, 0, 0, 9, 0, 0, 1, 0], data_out=b'Q' * 512, tag=8)
    p.kick(2).run_loop()
    p.chain(0, [(24, False, u32(0) + u32(0) + bytes([1, 0, 0, 0, 0, 0, 0, 0]) + u64(7)),
                (1, True, None)])
    p.chain(0, [(24, False, u32(0) + u32(5) + bytes([1, 0, 0, 0, 0, 0, 0, 0]) + u64(0)),
                (1, True, None)])
    p.kick(0).run_loop().release().run_loop()
    seeds['tmf-while-held'] = p.data
    p = start(setup=1 | 4 | (3 << 3))  # two request queues, 4 KiB blocks
    p.config_write(20, 4, 32).config_write(24, 4, 16)          # sense_size, cdb_size
    buffers = [(19 + 16, False, scsi_request([0x12, 0, 0, 0, 36, 0])[:35]),
               (12 + 32, True, None), (36, True, None)]
    p.chain(3, buffers)
    p.chain(2, [(REQUEST, False, scsi_request([0x12, 0, 0, 0, 36, 0], lun=2)),
                (RESPONSE, True, None), (36, True, None)])    # bad LUN
    p.kick(3).kick(2).run_loop().bring_up_again().config_read(0, 4)
    seeds['config-sizes-bad-lun'] = p.data
    return seeds


# --- virtio-mmio: setup byte (device kind, read-only), then register ops
# 0 read, 1 write, 2 status, 3 queue set-up; ring ops 4-9; device ops 10-16.
def virtio_mmio_seeds():
    seeds = {}

    def read(offset, size_choice=0): return u8(0) + u16(offset) + u8(size_choice)
    def write(offset, value, size_choice=0): return u8(1) + u16(offset) + u8(size_choice) + u64(value)
    def status(value): return u8(2) + u8(value)

    def queue(choice, ready=1, addresses=None):
        out = u8(3) + u8(choice)
        if choice & 0x80:
            out += u16(addresses[3])
        if choice & 0x40:
            out += u32(addresses[0]) + u32(addresses[1]) + u32(addresses[2])
        return out + u8(ready)

    probe = b''.join(read(o) for o in (0, 4, 8, 0xC, 0x60, 0x70, 0xFC, 0x100))
    negotiate = (status(1) + status(3) + write(0x14, 1) + read(0x10) + write(0x24, 1)
                 + write(0x20, 1) + status(11))
    p = Program(4, 10).raw(u8(0) + probe + negotiate + queue(3 << 3) + status(15))
    p.chain(0, [(16, False, blk_header(0, 0)), (512, True, None), (1, True, None)])
    p.kick(0).run_loop().raw(read(0x60) + write(0x64, 1) + status(0) + read(0x70))
    seeds['blk-probe-read'] = p.data
    p = Program(4, 10).raw(u8(2) + probe + negotiate)
    for q in range(3):  # scsi: queues 0, 1, 2 (choice % 4)
        p.raw(queue(q | (4 << 3)))
    p.raw(status(15) + read(0x100 + 20) + write(0x100 + 24, 64) + read(0x34, 1))
    seeds['scsi-three-queues'] = p.data
    p = Program(4, 10).raw(u8(1))
    p.raw(status(8) + status(4) + status(2) + status(1) + write(0x20, 0xFFFFFFFF) + status(15))
    p.raw(queue(1 | (7 << 3)) + queue(0x80 | 0x40, 1, (0x1001, 0xFFFFFFF0, 0x20000, 3)))
    p.raw(status(0x80) + status(0) + write(0x28, 4096) + write(0x50, 7, 1) + read(0x71, 2))
    seeds['out-of-order'] = p.data
    p = Program(4, 10).raw(u8(0) + negotiate + queue(4 << 3) + status(15))
    p.raw(queue(4 << 3, 1) + write(0x38, 1024) + status(7))  # set-up after DRIVER_OK
    p.bring_up_again().notify_register(4, 5).run_loop()
    seeds['after-driver-ok'] = p.data
    return seeds


# --- boot_loader: setup byte (initrd, RSDP, memory, command line), then
# the kernel file.
def bzimage(version=0x020F, relocatable=1, alignment=0x200000, pref=0x200000, init=0x400000,
            syssize=0x100, setup_sects=1, initrd_max=0x7FFFFFFF, xloadflags=1):
    setup = bytearray((setup_sects + 1) * 512)
    struct.pack_into('<B', setup, 0x1F1, setup_sects)
    struct.pack_into('<I', setup, 0x1F4, syssize)
    struct.pack_into('<H', setup, 0x1FE, 0xAA55)
    setup[0x200] = 0xEB
    setup[0x201] = 0x268 - 0x202
    struct.pack_into('<I', setup, 0x202, 0x53726448)
    struct.pack_into('<H', setup, 0x206, version)
    setup[0x211] = 0x01
    struct.pack_into('<I', setup, 0x22C, initrd_max)
    struct.pack_into('<I', setup, 0x230, alignment)
    setup[0x234] = relocatable
    struct.pack_into('<H', setup, 0x236, xloadflags)
    struct.pack_into('<I', setup, 0x238, 2047)
    struct.pack_into('<Q', setup, 0x258, pref)
    struct.pack_into('<I', setup, 0x260, init)
    kernel = bytes((i * 7) & 0xFF for i in range(syssize * 16))
    return bytes(setup) + kernel


def pvh_elf(entry=0x100000, paddr=0x100000, note_desc_size=4):
    phnum = 2
    header = bytearray(64)
    header[0:4] = b'\x7fELF'
    header[4], header[5], header[6] = 2, 1, 1
    struct.pack_into('<HHI', header, 16, 2, 62, 1)
    struct.pack_into('<QQQ', header, 24, entry, 64, 0)
    struct.pack_into('<IHHHHHH', header, 48, 0, 64, 56, phnum, 64, 0, 0)
    note = u32(4) + u32(note_desc_size) + u32(18) + b'Xen\0' + (u32(entry) if note_desc_size == 4 else u64(entry))
    note_offset = 64 + 56 * phnum
    load_offset = 0x200
    phdrs = struct.pack('<IIQQQQQQ', 1, 5, load_offset, paddr, paddr, 0x100, 0x2000, 0x1000)
    phdrs += struct.pack('<IIQQQQQQ', 4, 4, note_offset, 0, 0, len(note), len(note), 4)
    body = bytes(header) + phdrs + note
    body = body.ljust(load_offset, b'\0') + bytes(range(256))
    return body


def boot_loader_seeds():
    initrd_4k, cmdline_short = 3, 1 << 5
    return {
        'bzimage-initrd': u8(initrd_4k | cmdline_short | 8) + bzimage(),
        'bzimage-fixed-address': u8(1 | 0x10) + bzimage(relocatable=0, pref=0x1000000),
        'bzimage-old-protocol': u8(0) + bzimage(version=0x0206),
        'bzimage-truncated': u8(0) + bzimage()[:0x1000],
        'bzimage-long-cmdline': u8(3 << 5) + bzimage(),
        'bzimage-big-initrd': u8(5 | 0x10) + bzimage(initrd_max=0x37FFFFFF),
        'pvh': u8(initrd_4k | cmdline_short) + pvh_elf(),
        'pvh-8-byte-entry': u8(0x10) + pvh_elf(note_desc_size=8),
        'pvh-low-segment': u8(0) + pvh_elf(paddr=0x1000),
    }


TARGETS = {
    'virtqueue': virtqueue_seeds,
    'virtio_blk': virtio_blk_seeds,
    'virtio_scsi': virtio_scsi_seeds,
    'virtio_mmio': virtio_mmio_seeds,
    'boot_loader': boot_loader_seeds,
}

if __name__ == '__main__':
    for target in sys.argv[1:] or TARGETS:
        write_seeds(target, TARGETS[target]())
