/*
 * guest-exit: ends the VM with a chosen status by writing one byte to the
 * VMM's exit port (0xf4 by default). kvmini exits with that byte as its
 * status; QEMU's isa-debug-exit exits with (byte << 1) | 1.
 *
 * Debian's cloud kernel has no /dev/port (CONFIG_DEVPORT is off), so the
 * write goes through ioperm() + outb(); /dev/port is only a fallback for
 * kernels built without CONFIG_X86_IOPL_IOPERM.
 *
 * Usage: guest-exit [--port PORT] STATUS   (STATUS and PORT: 0..255 / 0..0xffff)
 * Returns 0 once the byte is written (a VMM without a device at the port
 * ignores it and the caller goes on, e.g. to power off), 1 if it cannot
 * write the port, 2 on bad usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <unistd.h>

static int parse_number(const char *text, unsigned long max, unsigned long *out) {
  char *end = NULL;
  errno = 0;
  unsigned long value = strtoul(text, &end, 0);
  if (errno != 0 || end == text || *end != '\0' || text[0] == '-' || value > max) return -1;
  *out = value;
  return 0;
}

static void usage(void) {
  fprintf(stderr, "usage: guest-exit [--port PORT] STATUS\n"
                  "  writes the byte STATUS (0..255) to I/O port PORT (default 0xf4)\n");
}

int main(int argc, char **argv) {
  unsigned long port = 0xf4;
  int arg = 1;
  if (argc == 4 && strcmp(argv[1], "--port") == 0) {
    if (parse_number(argv[2], 0xffff, &port) != 0) {
      fprintf(stderr, "guest-exit: bad port '%s' (want 0..0xffff)\n", argv[2]);
      return 2;
    }
    arg = 3;
  } else if (argc != 2) {
    usage();
    return 2;
  }
  unsigned long status = 0;
  if (parse_number(argv[arg], 255, &status) != 0) {
    fprintf(stderr, "guest-exit: bad status '%s' (want 0..255)\n", argv[arg]);
    usage();
    return 2;
  }

  if (ioperm(port, 1, 1) == 0) {
    outb((unsigned char)status, (unsigned short)port);
    return 0;
  }
  int ioperm_errno = errno;

  int fd = open("/dev/port", O_WRONLY);
  if (fd >= 0) {
    unsigned char byte = (unsigned char)status;
    ssize_t written = pwrite(fd, &byte, 1, (off_t)port);
    int write_errno = errno;
    close(fd);
    if (written == 1) return 0;
    fprintf(stderr, "guest-exit: cannot write port 0x%lx: ioperm: %s; /dev/port: %s\n", port,
            strerror(ioperm_errno), strerror(write_errno));
    return 1;
  }
  fprintf(stderr, "guest-exit: cannot write port 0x%lx: ioperm: %s; /dev/port: %s\n", port,
          strerror(ioperm_errno), strerror(errno));
  return 1;
}
