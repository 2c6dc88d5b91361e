#!/usr/bin/env bash
# tools/rxe-vm/run.sh [--two-hosts] [--share DIR] [--timeout S] [--] 'COMMAND'
#
# Runs COMMAND (bash, as root) in a throw-away qemu VM with soft-RoCE (rdma_rxe), for RDMA tests on machines
# whose kernel has no RDMA. The VM boots Debian's stock kernel under software emulation (TCG: KVM does not
# work on the project's machines), sees this machine's root filesystem read-only over 9p (with a tmpfs
# overlay, so guest writes outside the share are discarded) and the share folder (default: the repository)
# read-write at the same path. Binaries built on the host therefore run in the guest unchanged.
#
#   rxe0  on veth0, 10.10.0.1, GID index 1: server and client in one "host"
#   --two-hosts: rxe1 on va (10.10.1.1) and rxe2 on vb (10.10.1.2), two simulated hosts in one network
#                namespace; traffic between the two addresses really crosses the veth pair.
#
# COMMAND runs in the current folder when it is inside the share, else in the share; it sees
# GEDS_RXE_VM=1 and GEDS_RXE_DEVICES (e.g. "rxe0 rxe1 rxe2"). Its output streams here and the exit status is
# COMMAND's. Failures of the harness itself (install, boot, rxe setup, timeout) exit 125 with a line
# "rxe-vm: ERROR: ...".
#
# Environment: GEDS_RXE_VM_CACHE (default /var/tmp/geds-rxe-vm), GEDS_RXE_VM_MEM (4G), GEDS_RXE_VM_SMP (2),
# GEDS_RXE_VM_TIMEOUT (seconds, 3600; --timeout overrides).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
fail() { echo "rxe-vm: ERROR: $*" >&2; exit 125; }
note() { echo "rxe-vm: $*" >&2; }

two_hosts=0
share=$REPO
timeout_s=${GEDS_RXE_VM_TIMEOUT:-3600}
while (($#)); do
  case $1 in
    --two-hosts) two_hosts=1; shift ;;
    --share) share=$(cd "$2" && pwd) || fail "no folder $2"; shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; break ;;
    -*) fail "unknown option $1 (see --help)" ;;
    *) break ;;
  esac
done
(($# == 1)) || fail "usage: tools/rxe-vm/run.sh [--two-hosts] [--share DIR] [--timeout S] 'COMMAND'"
command=$1
((EUID == 0)) || fail "must run as root (it installs packages and shares / with the guest)"
[[ $share != / ]] || fail "refusing to share / read-write"
case $PWD/ in "$share"/*) workdir=$PWD ;; *) workdir=$share ;; esac

cache=${GEDS_RXE_VM_CACHE:-/var/tmp/geds-rxe-vm}
mem=${GEDS_RXE_VM_MEM:-4G}
smp=${GEDS_RXE_VM_SMP:-2}
mkdir -p "$cache"

# ---- host packages -------------------------------------------------------------------------------------
# qemu and busybox for the VM; kmod/iproute2/rdma-core and the verbs tools run inside the guest from the
# shared host root; perftest for reference figures.
packages=(qemu-system-x86 busybox-static kmod iproute2 rdma-core ibverbs-utils ibverbs-providers
          rdmacm-utils perftest)
install_missing() {
  local missing=() p
  for p in "${packages[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  note "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null 2>&1 || fail "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || fail "apt-get install ${missing[*]} failed"
}

# ---- guest kernel and initramfs, cached per kernel package ----------------------------------------------
# linux-image-amd64 (not -cloud-amd64: that one lacks rdma_rxe and 9p) is only downloaded and unpacked into
# the cache; nothing is installed into /boot or /lib/modules.
kernel_package() {
  apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n1
}
prepare_kernel() {
  local pkg kdir kver stage m name
  pkg=$(kernel_package)
  if [[ -z $pkg ]]; then apt-get update -qq >/dev/null 2>&1 || true; pkg=$(kernel_package); fi
  [[ -n $pkg ]] || fail "cannot resolve linux-image-amd64 to a kernel package"
  kdir=$cache/$pkg
  if [[ ! -f $kdir/ready ]]; then
    note "preparing guest kernel $pkg (download and unpack, once)"
    rm -rf "$kdir"; mkdir -p "$kdir/dl"
    (cd "$kdir/dl" && apt-get download -qq "$pkg" >/dev/null 2>&1) || fail "apt-get download $pkg failed"
    dpkg-deb -x "$kdir"/dl/*.deb "$kdir/root" || fail "cannot unpack $pkg"
    rm -rf "$kdir/dl"
    kver=$(ls "$kdir/root/lib/modules")
    depmod -b "$kdir/root" "$kver" || fail "depmod failed"
    # initramfs: static busybox, the modules to mount 9p and overlayfs (in dependency order), our /init
    stage=$(mktemp -d)
    mkdir -p "$stage"/{bin,dev,proc,sys,modules,lower,upper,root}
    cp /bin/busybox "$stage/bin/busybox"
    modprobe -d "$kdir/root" -S "$kver" -a --show-depends virtio_pci 9pnet_virtio 9p overlay |
      awk '$1 == "insmod" { print $2 }' | while read -r m; do
        name=${m##*/}
        [[ -e $stage/modules/$name ]] && continue
        cp "$m" "$stage/modules/$name"; echo "$name" >>"$stage/modules/load-order"
      done
    [[ -s $stage/modules/load-order ]] || fail "no 9p/overlay modules found in $pkg"
    install -m 755 "$HERE/init" "$stage/init"
    (cd "$stage" && find . -print | busybox cpio -o -H newc >"$kdir/initrd.cpio" 2>/dev/null) || fail "cpio failed"
    rm -rf "$stage"
    cp "$kdir/root/boot/vmlinuz-$kver" "$kdir/vmlinuz"
    echo "$kver" >"$kdir/kver"
    sha256sum "$HERE/init" | cut -d' ' -f1 >"$kdir/init.sha256"
    touch "$kdir/ready"
  fi
  # an edited /init invalidates the initramfs
  if [[ $(sha256sum "$HERE/init" | cut -d' ' -f1) != $(cat "$kdir/init.sha256") ]]; then
    rm -f "$kdir/ready"; prepare_kernel; return
  fi
  KDIR=$kdir
}

{
  flock -w 1800 9 || fail "another run is preparing $cache for too long"
  install_missing
  prepare_kernel
} 9>"$cache/.lock"
kver=$(cat "$KDIR/kver")

# ---- the job: a folder shared with the guest that carries the command and brings back its status --------
job=$(mktemp -d /tmp/geds-rxe-vm.XXXXXX)
trap 'rm -rf "$job"' EXIT
printf '%s\n' "$command" >"$job/command"
cat >"$job/params" <<EOF
GUEST_KVER=$kver
GUEST_MODULES=$KDIR/root/lib/modules/$kver
GUEST_SHARE=$share
GUEST_WORKDIR=$workdir
GUEST_TWO_HOSTS=$two_hosts
GUEST_SETUP=$HERE/guest-setup.sh
EOF

# ---- boot -------------------------------------------------------------------------------------------------
qemu=(qemu-system-x86_64 -nodefaults -no-user-config -no-reboot -display none
      -machine pc -accel tcg,thread=multi -cpu max -smp "$smp" -m "$mem"
      -kernel "$KDIR/vmlinuz" -initrd "$KDIR/initrd.cpio"
      -append "console=ttyS0 loglevel=4 panic=-1 rdinit=/init"
      -serial "file:$job/console.log" -serial stdio)
share9p() {  # tag, host folder, extra fsdev options
  qemu+=(-fsdev "local,id=$1,path=${2//,/,,},security_model=none,multidevs=remap$3"
         -device "virtio-9p-pci,fsdev=$1,mount_tag=$1")
}
share9p hostroot / ,readonly=on
share9p job "$job" ""
share9p share "$share" ""

start=$(date +%s)
set +e
timeout --foreground "$timeout_s" "${qemu[@]}" </dev/null
status=$?
set -e
console_tail() { tail -n "${1:-40}" "$job/console.log" 2>/dev/null | sed 's/^/  console| /' >&2 || true; }
((status != 124)) || { console_tail 30; fail "timed out after ${timeout_s}s"; }
[[ -s $job/status ]] || { console_tail; fail "the VM stopped before the command finished (qemu exit $status)"; }
result=$(cat "$job/status")
case $result in
  setup-failed) console_tail 20; fail "guest setup failed: $(cat "$job/setup-error" 2>/dev/null)" ;;
  [0-9]*) note "VM done in $(( $(date +%s) - start )) s, exit status $result"; exit "$result" ;;
  *) fail "unexpected status '$result'" ;;
esac
