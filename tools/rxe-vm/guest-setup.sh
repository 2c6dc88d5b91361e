# Runs inside the rxe-vm guest (started by its /init, as root, after switch_root into the host's userland):
# brings up soft-RoCE, then runs the job's command with its output on the second serial port (qemu's stdio)
# and leaves the exit status in the job folder. Not meant to be run on a host.
job=/run/geds-rxe-vm
. $job/params
out=/dev/ttyS1
stty -F $out raw -echo 2>/dev/null
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
setup_failed() { echo "$*" >$job/setup-error; echo setup-failed >$job/status; exit 1; }

# the kernel's modules live in the host's cache folder, visible through the shared root
mkdir -p /lib/modules && ln -sfn "$GUEST_MODULES" "/lib/modules/$GUEST_KVER"
modprobe -a rdma_rxe ib_uverbs rdma_ucm veth || setup_failed "modprobe rdma_rxe ib_uverbs rdma_ucm veth"
ip link set lo up

# One "host": rxe0 on a veth end. MTU 9000 so that rxe's active MTU is 4096 (1024 with 1500).
ip link add veth0 mtu 9000 type veth peer name veth0p mtu 9000 &&
  ip addr add 10.10.0.1/24 dev veth0 && ip link set veth0 up && ip link set veth0p up || setup_failed "veth0"
rdma link add rxe0 type rxe netdev veth0 || setup_failed "rdma link add rxe0"
devices=rxe0

if [ "$GUEST_TWO_HOSTS" = 1 ]; then
  # Two "hosts" in the initial network namespace (rxe on kernel 6.1 receives only there): va 10.10.1.1 and
  # its peer vb 10.10.1.2. Without policy routing, traffic between two local addresses takes lo and never
  # reaches the other rxe device; these rules send it out of one veth end and into the other.
  ip link add va mtu 9000 type veth peer name vb mtu 9000 &&
    ip addr add 10.10.1.1/24 dev va && ip addr add 10.10.1.2/24 dev vb &&
    ip link set va up && ip link set vb up || setup_failed "veth va/vb"
  for i in all default va vb; do
    sysctl -qw net.ipv4.conf.$i.accept_local=1 net.ipv4.conf.$i.rp_filter=0 || setup_failed "sysctl $i"
  done
  ip rule add pref 1000 lookup local && ip rule del pref 0 &&
    ip rule add pref 100 iif lo from 10.10.1.1 to 10.10.1.2 lookup 101 &&
    ip route add 10.10.1.2 dev va src 10.10.1.1 table 101 &&
    ip rule add pref 101 iif lo from 10.10.1.2 to 10.10.1.1 lookup 102 &&
    ip route add 10.10.1.1 dev vb src 10.10.1.2 table 102 || setup_failed "policy routing for va/vb"
  rdma link add rxe1 type rxe netdev va && rdma link add rxe2 type rxe netdev vb || setup_failed "rdma link add rxe1/rxe2"
  # Static neighbours: rxe drops packets while a neighbour is unresolved, so the first RDMA connection
  # would otherwise wait for a connection-manager retry (about 5 s).
  ip neigh replace 10.10.1.2 lladdr "$(cat /sys/class/net/vb/address)" dev va nud permanent &&
    ip neigh replace 10.10.1.1 lladdr "$(cat /sys/class/net/va/address)" dev vb nud permanent ||
    setup_failed "static neighbours for va/vb"
  devices="rxe0 rxe1 rxe2"
fi

for d in $devices; do
  ibv_devinfo -d $d 2>/dev/null | grep -q PORT_ACTIVE || setup_failed "$d: port not active: $(ibv_devinfo -d $d 2>&1 | tr '\n' ' ')"
done

export GEDS_RXE_VM=1 GEDS_RXE_DEVICES="$devices"
cd "$GUEST_WORKDIR" || setup_failed "cd $GUEST_WORKDIR"
bash -c "$(cat $job/command)" </dev/null >$out 2>&1
echo $? >$job/status
