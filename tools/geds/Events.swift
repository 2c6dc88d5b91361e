import ArgumentParser
import GEDS
import GedsCore

struct Watch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watch",
        abstract: "Print the changes under BUCKET[/PREFIX] as they happen, one line each: REVISION EVENT BUCKET/KEY.",
        discussion: """
            EVENT is created, deleted, renamed (followed by the old and the new name), copied, metadata, bucket-created \
            or bucket-deleted (followed by the bucket). Each line is written as soon as the event arrives. With --from \
            REV the events after revision REV come first (a watcher restarted --from the last revision it printed \
            misses nothing and repeats nothing); when the MDS no longer keeps them, it fails saying from which \
            revision it could resume.
            """)
    @OptionGroup var connection: Connection
    @Argument(help: "BUCKET, or BUCKET/PREFIX.") var target: String
    @Option(name: .customLong("from"), help: "Print the events after this revision first.") var from: UInt64?
    @Option(help: "Stop after this many events.") var count: Int?

    func run() async throws {
        try await withStore(connection) { (store) throws(GedsError) in
            let (bucket, prefix) = splitBucket(target)
            let subscription = try await store.subscribe(.prefix(prefix, in: bucket), after: from)
            defer { subscription.cancel() }
            var printed = 0
            while count.map({ printed < $0 }) ?? true, let event = try await subscription.next() {
                printLine(event.description)
                printed += 1
            }
        }
    }
}

struct Wait: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wait",
        abstract: "Wait until BUCKET/KEY exists (sealed): exit 0 once it does (at once if it does now), 1 on timeout.")
    @OptionGroup var connection: Connection
    @Argument(help: "BUCKET/KEY.") var target: String
    @Option(help: "Give up after this many seconds (default: wait as long as it takes).") var timeout: Double?

    func validate() throws {
        if let timeout, !(timeout >= 0) { throw ValidationError("--timeout must be a number of seconds, 0 or more") }
        guard splitBucket(target).1 != "" else { throw ValidationError("expected BUCKET/KEY, got '\(target)'") }
    }

    func run() async throws {
        try await withStore(connection) { (store) throws(GedsError) in
            let (bucket, key) = splitBucket(target)
            _ = try await store.wait(bucket: bucket, key: key,
                                     timeout: timeout.map { .nanoseconds(Int64(($0 * 1e9).rounded())) })
        }
    }
}
