import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A TCP port nobody listens on right now (bound to port 0, read back, closed).
public func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
    }
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}

public func canConnect(port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    return withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    } == 0
}

/// A Python helper process on loopback (`moto_server`, or a small fault-injecting HTTP server), started by the
/// tests. Its standard input is a pipe from this process: when the test process ends, however it ends, the pipe
/// closes and a watchdog thread in the helper exits it (deleting its log), so no server outlives the tests.
// @unchecked: Process and Pipe are not Sendable; both are set once at init, and only stop() (one caller) uses them.
public final class ServerProcess: @unchecked Sendable {
    public let port: Int
    public let logPath: String
    private let process: Process
    private let stdinPipe: Pipe

    public var endpoint: String { "http://127.0.0.1:\(port)" }

    /// Python that starts the watchdog, then runs `main`.
    public static func script(_ main: String) -> String {
        """
        import os, sys, threading
        def _watchdog():
            try:
                while sys.stdin.buffer.read(1):
                    pass
            finally:
                try:
                    os.unlink(os.environ["GEDS_TEST_SERVER_LOG"])
                except (KeyError, OSError):
                    pass
                os._exit(0)
        threading.Thread(target=_watchdog, daemon=True).start()
        \(main)
        """
    }

    /// A real `moto_server` (PyPI `moto[server]`) on 127.0.0.1.
    public static func moto(port: Int? = nil, environment: [String: String] = [:]) throws -> ServerProcess {
        let port = port ?? freePort()
        return try ServerProcess(port: port, script: script("""
            from moto.server import main
            main(["-H", "127.0.0.1", "-p", "\(port)"])
            """), environment: environment, name: "moto")
    }

    public init(port: Int, script: String, environment: [String: String], name: String) throws {
        self.port = port
        logPath = NSTemporaryDirectory() + "geds-s3-\(name)-\(port)-\(UInt32.random(in: 0...UInt32.max)).log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script]
        var env = ProcessInfo.processInfo.environment
        for (name, value) in environment { env[name] = value }
        env["GEDS_TEST_SERVER_LOG"] = logPath  // the helper deletes its log when the test process ends
        process.environment = env
        stdinPipe = Pipe()
        process.standardInput = stdinPipe
        let log = FileHandle(forWritingAtPath: logPath)
        process.standardOutput = log
        process.standardError = log
        try process.run()
        let deadline = Date().addingTimeInterval(30)
        while !canConnect(port: port) {
            guard process.isRunning, Date() < deadline else {
                stop()
                let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
                throw ServerDidNotStart(message: "the \(name) server on port \(port) did not start: \(text.suffix(2000))")
            }
            usleep(50_000)
        }
    }

    /// Kills the process (SIGKILL: as abrupt as a crash) and waits for it.
    public func stop() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    deinit {
        stop()
        unlink(logPath)
    }
}

/// One moto server shared by the tests that do not stop theirs; each test uses buckets of its own.
public actor SharedMoto {
    public static let instance = SharedMoto()
    private var server: ServerProcess?

    public func endpoint() throws -> String {
        if let server { return server.endpoint }
        let started = try ServerProcess.moto()
        server = started
        return started.endpoint
    }
}

/// A helper server that did not start, with the end of its log.
public struct ServerDidNotStart: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}
