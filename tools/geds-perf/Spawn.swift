import Foundation
import GedsCore

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
        return Child(pid: pid, output: captureOutput ? pipeEnds[0] : nil)
    }

    /// Reads the child's stdout until `stop` says enough or the child closes it.
    func read(until stop: (String) -> Bool = { _ in false }) -> String {
        guard let output else { return "" }
        var data = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let got = Glibc.read(output, &chunk, chunk.count)
            if got < 0, errno == EINTR { continue }
            if got <= 0 { break }
            data += chunk[..<got]
            if stop(String(decoding: data, as: UTF8.self)) { break }
        }
        return String(decoding: data, as: UTF8.self)
    }

    @discardableResult
    func wait() -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0, errno == EINTR {}
        if let output { close(output) }
        return status
    }

    /// Ends the child: SIGTERM, then SIGKILL if it is still there after a second (iperf3's server
    /// ignores SIGTERM while idle).
    func terminate() {
        kill(pid, SIGTERM)
        var status: Int32 = 0
        for _ in 0..<100 {
            if waitpid(pid, &status, WNOHANG) != 0 {
                if let output { close(output) }
                return
            }
            usleep(10_000)
        }
        kill(pid, SIGKILL)
        wait()
    }

    /// Runs a command to completion and returns its stdout.
    static func run(_ path: String, _ arguments: [String]) throws -> String {
        let child = try spawn(path, arguments, captureOutput: true)
        let output = child.read()
        child.wait()
        return output
    }
}
