"""libgeds, the C ABI: installed with tools/install.sh into a scratch prefix, used from a scratch folder through
pkg-config only, by C, C++ and Fortran programs (the examples/ and Tests/capi/) run against the session's real
MDS and gedsd, under `mpirun -np 4` for the MPI examples; then geds-launch starting a job's GEDS under mpirun.

Needs mpicc, mpifort, gfortran, c++ and pkg-config (tools/setup.sh installs them)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from geds_harness import BIN, REPO

HEADER = os.path.join(REPO, "CShims", "CGeds", "include", "geds.h")
MPIRUN = ["mpirun", "--oversubscribe", "-np", "4"]


def program_env(mds: str | None = None, **extra: str) -> dict:
    """The environment of a user's program: no GEDS_* from the runner, no Swift toolchain on the library path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEDS_") and k != "LD_LIBRARY_PATH"}
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1",
               SWIFT_BACKTRACE="enable=no")
    if mds:
        env["GEDS_MDS"] = mds
    env.update(extra)
    return env


def run(args, env=None, cwd=None, timeout=180) -> subprocess.CompletedProcess:
    result = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, args))} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def prefix(session_root):
    path = os.path.join(session_root, "prefix")
    run([os.path.join(REPO, "tools", "install.sh"), "--prefix", path, "--no-build"], env={**os.environ, "GEDS_BIN": BIN})
    return path


@pytest.fixture(scope="module")
def built(prefix, session_root):
    """The examples and C tests built in a scratch folder with nothing but pkg-config's flags."""
    folder = os.path.join(session_root, "capi-build")
    shutil.copytree(os.path.join(REPO, "examples"), folder)
    for name in ("api_test.c", "threads_test.c", "fortran_test.f90"):
        shutil.copy(os.path.join(REPO, "Tests", "capi", name), folder)
    env = program_env(PKG_CONFIG_PATH=os.path.join(prefix, "lib", "pkgconfig"))
    run(["make", "-j2"], env=env, cwd=folder)
    flags = run(["pkg-config", "--cflags", "--libs", "geds"], env=env).stdout.split()
    run(["cc", "-std=c99", "-Wall", "-Werror", "-o", "api_test", "api_test.c", *flags], env=env, cwd=folder)
    run(["cc", "-std=c11", "-Wall", "-Werror", "-pthread", "-o", "threads_test", "threads_test.c", *flags], env=env,
        cwd=folder)
    # The Fortran module from its installed source, as a compiler other than the installer's gfortran would.
    run(["gfortran", "-c", "-o", "geds.o", os.path.join(prefix, "include", "geds.f90")], env=env, cwd=folder)
    run(["gfortran", "-Wall", "-o", "fortran_test", "fortran_test.f90", "geds.o", *flags], env=env, cwd=folder)
    return folder


def declared_functions() -> set[str]:
    with open(HEADER) as handle:
        return set(re.findall(r"\b(geds_\w+)\(", handle.read()))


def test_installed_tree(prefix):
    for path in ("lib/libgeds.so", "include/geds.h", "include/geds.f90", "include/geds.mod", "lib/libgeds_fortran.a",
                 "lib/pkgconfig/geds.pc", "lib/pkgconfig/geds-fortran.pc", "bin/geds",
                 "bin/geds-mds", "bin/gedsd", "bin/geds-perf", "bin/geds-launch"):
        assert os.path.exists(os.path.join(prefix, path)), path
    env = program_env(PKG_CONFIG_PATH=os.path.join(prefix, "lib", "pkgconfig"))
    assert run(["pkg-config", "--variable=prefix", "geds"], env=env).stdout.strip() == prefix
    assert run(["pkg-config", "--cflags", "geds"], env=env).stdout.split() == [f"-I{prefix}/include"]
    assert f"-L{prefix}/lib" in run(["pkg-config", "--libs", "geds"], env=env).stdout.split()


def test_only_the_api_is_exported(prefix):
    out = run(["nm", "-D", "--defined-only", os.path.join(prefix, "lib", "libgeds.so")]).stdout
    exported = {line.split()[-1] for line in out.splitlines() if line.strip()}
    assert exported == declared_functions()


def test_library_runs_without_the_swift_toolchain(prefix):
    library = os.path.join(prefix, "lib", "libgeds.so")
    dynamic = run(["readelf", "-d", library]).stdout
    assert "libswift" not in dynamic and "/opt/swift" not in dynamic, dynamic
    assert "Library soname: [libgeds.so]" in dynamic
    resolved = run(["ldd", library], env=program_env()).stdout
    assert "not found" not in resolved and "swift" not in resolved, resolved


def test_programs_run_with_the_swift_toolchain_hidden(built, cluster):
    """In a mount namespace where /opt/swift is an empty folder, a program linked with libgeds still runs."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not os.path.isdir("/opt/swift"):
        pytest.skip("needs root, unshare and /opt/swift to hide it")
    result = run(["unshare", "--mount", "sh", "-c",
                  f"mount -t tmpfs none /opt/swift && test ! -e /opt/swift/usr && exec {built}/hello_cpp capi-no-swift"],
                 env=program_env(cluster.mds_address))
    assert "hello_cpp: OK" in result.stdout


def test_header_compiles_as_c99_and_cpp17(tmp_path):
    source = tmp_path / "use.c"
    source.write_text("#include <geds.h>\nint use(void) { return GEDS_ABI_VERSION + GEDS_E_INTERNAL; }\n")
    include = os.path.dirname(HEADER)
    run(["cc", "-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror", "-I", include, "-c", str(source), "-o",
         str(tmp_path / "c.o")])
    run(["c++", "-std=c++17", "-pedantic", "-Wall", "-Wextra", "-Werror", "-x", "c++", "-I", include, "-c", str(source),
         "-o", str(tmp_path / "cpp.o")])


def test_every_function_with_good_and_bad_input(built, cluster):
    with open(os.path.join(REPO, "Tests", "capi", "api_test.c")) as handle:
        called = set(re.findall(r"\b(geds_\w+)\(", handle.read()))
    assert declared_functions() <= called, f"api_test.c does not call {sorted(declared_functions() - called)}"
    result = run([os.path.join(built, "api_test"), "capi-every-function"], env=program_env(cluster.mds_address))
    assert "api_test: 0 failures" in result.stdout


def test_eight_threads_share_one_handle(built, cluster):
    result = run([os.path.join(built, "threads_test"), "capi-threads"], env=program_env(cluster.mds_address))
    assert "0 failures" in result.stdout


@pytest.mark.parametrize("hosts", ["one host", "two simulated hosts", "one host, views"])
def test_mpi_ranks_exchange_objects_in_c(built, cluster, hosts):
    extra = {"one host": [], "two simulated hosts": ["--ranks-per-host", "2"], "one host, views": ["--view", "1"]}[hosts]
    result = run([*MPIRUN, os.path.join(built, "mpi_exchange"), "--size", str(3 << 20), "--bucket", "capi-mpi-c", *extra],
                 env=program_env(cluster.mds_address))
    assert ": OK" in result.stdout


def test_mpi_ranks_exchange_objects_in_fortran(built, cluster):
    result = run([*MPIRUN, os.path.join(built, "mpi_exchange_f")], env=program_env(cluster.mds_address))
    assert "4 ranks: OK" in result.stdout


def test_every_fortran_function(built, cluster):
    result = run([os.path.join(built, "fortran_test")], env=program_env(cluster.mds_address))
    assert "fortran_test: 0 failures" in result.stdout, result.stdout


def test_cpp_program(built, cluster):
    result = run([os.path.join(built, "hello_cpp"), "capi-cpp"], env=program_env(cluster.mds_address))
    assert "greetings/fr (17 bytes): bonjour, le monde" in result.stdout and "hello_cpp: OK" in result.stdout


def test_producer_and_consumer_steps(built, cluster):
    env = program_env(cluster.mds_address)
    run([os.path.join(built, "producer"), "capi-steps", "run/", "6", "250000"], env=env)
    where = cluster.geds("stat", "capi-steps/run/3").ok().text
    assert "node-a" in where or "node-b" in where, where  # handed to a gedsd: outlives the producer
    result = run([os.path.join(built, "consumer"), "capi-steps", "run/", "6", "250000"], env=env)
    assert "6 of 6 objects intact" in result.stdout


def test_geds_launch_under_mpirun(built, prefix, session_root):
    """geds-launch starts an MDS and a gedsd per host (mpirun --map-by ppr:1:node) for a job, whose ranks find
    them through the environment file; stop flushes and ends them."""
    launch = os.path.join(prefix, "bin", "geds-launch")
    state = os.path.join(session_root, "launch")
    env = program_env()
    common = ["--dir", state]
    run([launch, "start", *common, "--launcher", "mpirun", "--address", "127.0.0.1", "--port", "0",
         "--tier0", os.path.join(session_root, "launch-tier0")], env=env, timeout=120)
    try:
        with open(os.path.join(state, "geds.env")) as handle:
            mds = re.fullmatch(r"export GEDS_MDS=(\S+)\n", handle.read()).group(1)
        nodes = run([os.path.join(prefix, "bin", "geds"), "--mds", mds, "nodes"], env=env).stdout
        assert re.search(r"^gedsd-\S+\s+alive", nodes, re.MULTILINE), nodes
        job = program_env(mds)
        result = run([*MPIRUN, os.path.join(built, "mpi_exchange"), "--bucket", "launched"], env=job)
        assert ": OK" in result.stdout
        run([os.path.join(built, "producer"), "launched", "step/", "3", "5000"], env=job)
        assert "3 of 3" in run([os.path.join(built, "consumer"), "launched", "step/", "3", "5000"], env=job).stdout
        with open(os.path.join(state, "pids")) as handle:
            pids = [int(line.split()[1]) for line in handle if line.split()[0] in ("mds", "nodes")]
    finally:
        stopped = subprocess.run([launch, "stop", *common], env=env, capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert not os.path.exists(os.path.join(state, "geds.env"))
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


# MARK: one-host Slurm


def free_port() -> int:
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def slurm(session_root):
    """A real one-host Slurm: slurmctld and slurmd (Debian's packages) on loopback, with a configuration of their
    own (auth/none, no cgroups, no accounting), started here and stopped at the end of this module."""
    if not (shutil.which("slurmctld") and shutil.which("slurmd") and shutil.which("salloc")):
        pytest.skip("Slurm is not installed (tools/setup.sh installs slurmctld, slurmd and slurm-client)")
    from geds_harness import _die_with_parent
    folder = os.path.join(session_root, "slurm")
    for sub in ("ctld", "d", "log"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    node = subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip()
    conf = os.path.join(folder, "slurm.conf")
    with open(conf, "w") as handle:
        handle.write(f"""ClusterName=geds
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/none
CredType=cred/none
StateSaveLocation={folder}/ctld
SlurmdSpoolDir={folder}/d
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/log/slurmctld.log
SlurmdLogFile={folder}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
NodeName={node} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:8
""")
    env = {**program_env(), "SLURM_CONF": conf}
    daemons = [subprocess.Popen([daemon, "-D", "-f", conf], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent) for daemon in ("slurmctld", "slurmd")]
    try:
        import time
        deadline = time.monotonic() + 30
        while run(["sinfo", "-h", "-o", "%T"], env=env).stdout.strip() not in ("idle", "mixed"):
            assert time.monotonic() < deadline, "Slurm did not come up:\n" + open(f"{folder}/log/slurmctld.log").read()[-2000:]
            time.sleep(0.3)
        yield env
    finally:
        for daemon in daemons:
            daemon.terminate()
        for daemon in daemons:
            try:
                daemon.wait(timeout=20)
            except subprocess.TimeoutExpired:
                daemon.kill()


def test_geds_launch_under_slurm(built, prefix, session_root, slurm):
    """Inside a real allocation, geds-launch starts the MDS and one gedsd per node through srun --overlap; job
    steps (srun) and an mpirun find them through the environment file; stop flushes and ends them."""
    state = os.path.join(session_root, "slurm-job")
    script = f"""set -euo pipefail
{prefix}/bin/geds-launch start --dir {state} --address 127.0.0.1 --port 0
source {state}/geds.env
{prefix}/bin/geds nodes
srun --ntasks=1 ./producer slurm-steps s/ 5 70000
srun --ntasks=1 ./consumer slurm-steps s/ 5 70000
mpirun --oversubscribe -np 4 ./mpi_exchange --bucket slurm-mpi
{prefix}/bin/geds-launch stop --dir {state}
test ! -e {state}/geds.env && echo stopped
"""
    result = run(["salloc", "--nodes=1", "--ntasks=4", "--overcommit", "bash", "-c", script], env=slurm, cwd=built,
                 timeout=240)
    assert re.search(r"^gedsd-\S+\s+alive", result.stdout, re.MULTILINE), result.stdout
    assert "1 gedsd (slurm)" in result.stdout
    assert "consumer: 5 of 5 objects intact" in result.stdout
    assert "4 ranks" in result.stdout and ": OK" in result.stdout
    assert result.stdout.rstrip().endswith("stopped")


def test_geds_launch_stop_flushes_write_back(prefix, session_root):
    """A job's objects in a write-back bucket are in S3 once geds-launch stop returns (here with the local
    launcher: one gedsd on this host, no mpirun)."""
    s3 = pytest.importorskip("test_s3")  # moto and boto3, as the S3 tests use them
    from geds_harness import sha256
    moto = s3.Moto(session_root, "capi-moto").start()
    env = program_env(AWS_ACCESS_KEY_ID=s3.ACCESS_KEY, AWS_SECRET_ACCESS_KEY=s3.SECRET_KEY)
    launch, geds = os.path.join(prefix, "bin", "geds-launch"), os.path.join(prefix, "bin", "geds")
    state = os.path.join(session_root, "launch-s3")
    try:
        moto.client().create_bucket(Bucket="capi-launch")
        run([launch, "start", "--dir", state, "--launcher", "local", "--address", "127.0.0.1", "--port", "0",
             "--tier0", os.path.join(session_root, "launch-s3-tier0")], env=env)
        with open(os.path.join(state, "geds.env")) as handle:
            mds = re.fullmatch(r"export GEDS_MDS=(\S+)\n", handle.read()).group(1)
        run([geds, "--mds", mds, "bucket", "launched-wb", "--s3", f"{moto.endpoint}/capi-launch",
             "--persistency", "write-back"], env=env)
        data = os.urandom(3 << 20)
        source = os.path.join(session_root, "launch-s3.bin")
        with open(source, "wb") as handle:
            handle.write(data)
        run([geds, "--mds", mds, "put", source, "launched-wb/result.bin"], env=env)
        run([launch, "stop", "--dir", state], env=env)
        assert moto.sha256("capi-launch", "result.bin") == sha256(data)
    finally:
        if os.path.exists(os.path.join(state, "pids")):
            subprocess.run([launch, "stop", "--dir", state], env=env, capture_output=True, timeout=120)
        moto.stop()


def test_the_example_sbatch_job(built, prefix, slurm):
    """examples/job.sbatch, submitted as it is: geds-launch, two job steps and an mpirun inside one allocation."""
    shutil.copy(os.path.join(REPO, "examples", "job.sbatch"), built)
    output = os.path.join(built, "job.out")
    run(["sbatch", "--wait", f"--output={output}", "job.sbatch"], env={**slurm, "GEDS_PREFIX": prefix}, cwd=built,
        timeout=300)
    with open(output) as handle:
        text = handle.read()
    assert "consumer: 16 of 16 objects intact" in text, text
    assert re.search(r"mpi_exchange: 4 ranks.*: OK", text), text
