import Dispatch
import Foundation
import GedsCore
import Synchronization

/// A child process started with posix_spawn and reaped with waitpid. (Foundation's `Process` on Linux
/// hung in `waitUntilExit` when called from this async program, so children are handled directly.)
struct Child {
    let pid: pid_t
    /// The read end of the child's stdout, when it was captured.
    let output: Int32?

    static func spawn(_ path: String, _ arguments: [String], captureOutput: Bool) throws -> Child {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var pipeEnds: [Int32] = [-1, -1]
        if captureOutput {
            guard pipe(&pipeEnds) == 0 else { throw GedsError.io("pipe", errno: errno) }
            // Close-on-exec, so later children do not inherit this pipe and keep it open.
            for end in pipeEnds { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
            posix_spawn_file_actions_adddup2(&actions, pipeEnds[1], 1)
        } else {
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        }
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        let envp = ProcessInfo.processInfo.environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, path, &actions, nil, argv, envp)
        if captureOutput { close(pipeEnds[1]) }
        guard result == 0 else {
            if captureOutput { close(pipeEnds[0]) }
            throw GedsError.io("cannot start \(path)", errno: result)
        }
        Cleanup.live.withLock { _ = $0.insert(pid) }
        return Child(pid: pid, output: captureOutput ? pipeEnds[0] : nil)
    }

    /// Reads the child's stdout until `stop` says enough or the child closes it.
    func read(until stop: (String) -> Bool = { _ in false }) -> String {
        guard let output else { return "" }
        var data = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let got = retryingOnInterrupt { Glibc.read(output, &chunk, chunk.count) }
            if got <= 0 { break }
            data += chunk[..<got]
            if stop(String(decoding: data, as: UTF8.self)) { break }
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// Waits for the child to end; returns its wait status.
    @discardableResult
    func wait() -> Int32 {
        var status: Int32 = 0
        _ = retryingOnInterrupt { waitpid(pid, &status, 0) }
        reaped()
        return status
    }

    /// Ends the child: SIGTERM, then SIGKILL if it is still there after a second (iperf3's server
    /// ignores SIGTERM while idle).
    func terminate() {
        kill(pid, SIGTERM)
        var status: Int32 = 0
        for _ in 0..<100 {
            if waitpid(pid, &status, WNOHANG) != 0 {
                reaped()
                return
            }
            usleep(10_000)
        }
        kill(pid, SIGKILL)
        wait()
    }

    private func reaped() {
        if let output { close(output) }
        Cleanup.live.withLock { _ = $0.remove(pid) }
    }

    /// Runs a command to completion; returns its stdout and whether it exited with status 0. A command
    /// still running after `timeoutSeconds` is killed (a reference tool that hangs, e.g. waiting for a
    /// server that never answered, must not hang the whole run); it then counts as failed.
    static func run(_ path: String, _ arguments: [String], timeoutSeconds: Int = 300) throws -> (output: String, succeeded: Bool) {
        let child = try spawn(path, arguments, captureOutput: true)
        let finished = Finished()
        DispatchQueue.global().asyncAfter(deadline: .now() + .seconds(timeoutSeconds)) {
            if !finished.state.withLock({ $0 }) { kill(child.pid, SIGKILL) }
        }
        let output = child.read()
        let status = child.wait()
        finished.state.withLock { $0 = true }
        return (output, status == 0)
    }

    private final class Finished: Sendable {
        let state = Mutex(false)
    }
}

/// What an interrupted run must not leave behind: the children it started (an MDS, a gedsd, reference
/// servers) and the tier-0 folders, which hold gigabytes of memory on /dev/shm.
enum Cleanup {
    static let live = Mutex<Set<pid_t>>([])
    static let folders = Mutex<[String]>([])

    /// On SIGINT or SIGTERM: kill the children, remove the folders, exit 128 + the signal.
    static func installSignalHandlers() {
        for signal in [SIGINT, SIGTERM] {
            Glibc.signal(signal, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signal, queue: .global())
            source.setEventHandler {
                for pid in live.withLock({ $0 }) { kill(pid, SIGKILL) }
                for folder in folders.withLock({ $0 }) {
                    umount(folder)  // the huge-page tmpfs, if one was mounted there
                    try? FileManager.default.removeItem(atPath: folder)
                }
                printError("geds-perf: interrupted")
                exit(128 + signal)
            }
            source.resume()
            // Kept for the life of the process: a released source would stop handling the signal.
            _ = Unmanaged.passRetained(source as AnyObject)
        }
    }
}
