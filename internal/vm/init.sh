#!/bin/busybox sh
# The guest's init (internal/vm): mount the host's files over 9p under a writable overlay in
# memory, bring in the unpacked kernel's modules, and run the script named on the kernel's
# command line (mptcpgo.run=), reporting its exit status on the console.
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t devtmpfs dev /dev
for m in $($B cat /modules); do
	$B insmod /mods/$m || echo "init: insmod $m failed"
done
arg() { $B sed -n "s/.* $1=\([^ ]*\).*/\1/p" /proc/cmdline; }
fail() { echo "init: $*"; echo "MPTCPGO-VM-EXIT 125"; echo o > /proc/sysrq-trigger; $B sleep 60; }
$B mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000 hostroot /lower || fail "mount the host's files"
$B mount -t tmpfs -o mode=0755 rw /rw
$B mkdir -p /rw/upper /rw/work
$B mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work root /newroot || fail "overlay"
mods=$(arg mptcpgo.modules)
$B mkdir -p /newroot/usr/lib/modules
$B mount --bind "/newroot$mods" /newroot/usr/lib/modules || fail "modules at $mods"
run=$(arg mptcpgo.run)
exec $B switch_root /newroot /bin/sh -c '
	mount -t proc proc /proc
	mount -t sysfs sys /sys
	mount -t devtmpfs dev /dev
	mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs shm /dev/shm
	mount -t tmpfs -o mode=0755 run /run # not the host /run: its netns files and daemon sockets
	mount -t cgroup2 cgroup2 /sys/fs/cgroup
	mount -t bpf bpf /sys/fs/bpf
	mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
	ip link set lo up
	modprobe tun # /dev/net/tun appears with the module (no udev here to make it at boot)
	ulimit -n 1048576
	export HOME=/root PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
	cd /
	sh '"$run"'
	echo "MPTCPGO-VM-EXIT $?"
	echo o > /proc/sysrq-trigger
	sleep 60'
