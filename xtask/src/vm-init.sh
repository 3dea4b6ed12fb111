#!/bin/sh
# Stage 2 of a VM matrix boot (xtask/src/vmtest.rs). It runs as PID 1 on the host's root,
# shared read-only over virtio-9p, after the initramfs (xtask/src/kernels.rs) switched to it:
# it gives the tests the writable places they use, points the kernel's module loader at the
# guest kernel's own modules, runs the script named by bg.run= and reports its exit code on
# the console, the only verdict the host reads.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
param() { sed -n "s/.*bg\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
# The workspace (bg.keep=) may live under a directory that gets a tmpfs (a CI clone in /tmp):
# hold it on a bind mount and put it back on top.
ws=$(param keep)
# A foreign-architecture guest (arm64) runs on its own userland: the workspace is a second
# share, mounted at its host path (an empty directory in that userland).
if [ "$(param ws9p)" = 1 ]; then
    mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose ws "$ws"
fi
mkdir -p /dev/shm/ws
mount --bind "$ws" /dev/shm/ws
for d in /tmp /run /var/tmp; do mount -t tmpfs -o mode=1777 tmpfs "$d"; done
case "$ws" in
/tmp/* | /run/* | /var/tmp/*) mkdir -p "$ws" && mount --move /dev/shm/ws "$ws" ;;
*) umount /dev/shm/ws ;;
esac
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
mount -t securityfs securityfs /sys/kernel/security
# The host has no modules for this kernel: modprobe reads the unpacked package instead.
# By path: busybox's sh (the arm64 userland's) would pick its own modprobe applet by name.
for modprobe in /usr/sbin/modprobe /sbin/modprobe; do [ -x "$modprobe" ] && break; done
printf '#!/bin/sh\nexec %s -d %s "$@"\n' "$modprobe" "$(param modroot)" > /run/bg-modprobe
chmod 755 /run/bg-modprobe
echo /run/bg-modprobe > /proc/sys/kernel/modprobe
ip link set lo up
echo "bindguard-vm: kernel $(uname -r) lsm=$(cat /sys/kernel/security/lsm)"
/bin/sh "$(param run)"
echo "bindguard-vm: exit=$?"
sync
/bin/busybox poweroff -f
