/*
 * guest-exit: ends the VM with a chosen status by writing one byte to the
 * VMM's exit port (0xf4 by default). kvmini exits with that byte as its
 * status; QEMU's isa-debug-exit exits with (byte << 1) | 1.
 *
 * Debian's cloud kernel has no /dev/port (CONFIG_DEVPORT is off), so the
 * write goes through ioperm() + outb(); /dev/port is only a fallback for
 * kernels built without CONFIG_X86_IOPL_IOPERM.
 *
 * Before the write it waits (up to 10 s) until the console has sent all the
 * output queued in the guest's tty: the VM ends at the write, and bytes
 * still in the kernel's 4 KiB UART buffer would never reach the host.
 *
 * Usage: guest-exit [--port PORT] STATUS   (STATUS and PORT: 0..255 / 0..0xffff)
 * Returns 0 once the byte is written (a VMM without a device at the port
 * ignores it and the caller goes on, e.g. to power off), 1 if it cannot
 * write the port, 2 on bad usage.
 *
 * Usage: guest-exit --drain
 * Only waits for the console's output to be sent; returns 0 once it was,
 * 1 after the timeout. /init's console session ends with it: when a session
 * leader exits, Linux hangs up its terminal and discards the unsent output.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/io.h>
#include <termios.h>
#include <unistd.h>

enum { kDrainTimeoutSeconds = 10 };

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
                  "  writes the byte STATUS (0..255) to I/O port PORT (default 0xf4),\n"
                  "  once the console has sent its queued output\n"
                  "       guest-exit --drain\n"
                  "  only waits for the console to send its queued output\n");
}

static void on_drain_timeout(int signal_number) { (void)signal_number; }

/* Waits until the console's tty has handed all queued output to the UART
 * and the UART reports its transmitter empty (tcdrain), for at most
 * kDrainTimeoutSeconds: a stalled UART must not keep the VM alive. Returns
 * 0 when drained or when there is no console tty, -1 (with a message) if
 * the wait failed or timed out. */
static int drain_console(void) {
  int fd = open("/dev/console", O_WRONLY | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) return 0; /* no console: nothing can be lost on it */
  /* A caller in a background process group of the console's session would
   * otherwise be stopped by SIGTTOU instead of waiting. */
  signal(SIGTTOU, SIG_IGN);
  struct sigaction action;
  memset(&action, 0, sizeof(action));
  action.sa_handler = on_drain_timeout; /* no SA_RESTART: tcdrain returns EINTR */
  sigemptyset(&action.sa_mask);
  sigaction(SIGALRM, &action, NULL);
  alarm(kDrainTimeoutSeconds);
  int result = tcdrain(fd);
  int drain_errno = errno;
  alarm(0);
  close(fd);
  if (result == 0 || drain_errno == ENOTTY) return 0;
  if (drain_errno == EINTR) {
    fprintf(stderr, "guest-exit: the console did not send its queued output within %d s\n",
            kDrainTimeoutSeconds);
  } else {
    fprintf(stderr, "guest-exit: waiting for the console output: %s\n", strerror(drain_errno));
  }
  return -1;
}

int main(int argc, char **argv) {
  unsigned long port = 0xf4;
  int arg = 1;
  if (argc == 2 && strcmp(argv[1], "--drain") == 0) return drain_console() == 0 ? 0 : 1;
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

  /* A console that did not drain still gets the status written: ending the
   * VM with the right status matters more than the lost lines. */
  drain_console();
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
