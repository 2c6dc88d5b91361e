import GEDS
import Synchronization

/// Something C holds through an opaque pointer.
protocol Handle: AnyObject, Sendable {
    /// What C calls it, for messages: "geds_t", "geds_reader_t", ...
    static var cName: String { get }
}

/// The handles C holds. A handle's pointer is a serial number, never an address, so a NULL, closed, foreign or
/// wrongly typed pointer is refused with an error instead of being dereferenced, and a second close is detected.
enum Handles {
    private struct Table {
        var live: [UInt: any Handle] = [:]
        var lastNumber: UInt = 0
    }

    private static let table = Mutex(Table())

    static func register(_ handle: some Handle) -> OpaquePointer? {
        table.withLock { table in
            table.lastNumber += 1
            table.live[table.lastNumber] = handle
            return OpaquePointer(bitPattern: table.lastNumber)
        }
    }

    static func find<H: Handle>(_ pointer: OpaquePointer?, as type: H.Type) throws(GedsError) -> H {
        let number = UInt(bitPattern: pointer)
        guard let handle = table.withLock({ $0.live[number] }) as? H else { throw invalid(pointer, type) }
        return handle
    }

    /// Forgets the handle; C may not use its pointer again.
    static func remove<H: Handle>(_ pointer: OpaquePointer?, as type: H.Type) throws(GedsError) -> H {
        let number = UInt(bitPattern: pointer)
        let removed = table.withLock { table -> H? in
            guard let handle = table.live[number] as? H else { return nil }
            table.live[number] = nil
            return handle
        }
        guard let removed else { throw invalid(pointer, type) }
        return removed
    }

    private static func invalid(_ pointer: OpaquePointer?, _ type: any Handle.Type) -> GedsError {
        pointer == nil ? GedsError(.invalidArgument, "\(type.cName) is NULL")
            : GedsError(.invalidArgument, "not an open \(type.cName) (closed already, or never opened)")
    }
}

final class Store: Handle {
    static let cName = "geds_t"
    let geds: GEDS
    /// Persistency of the objects created through this handle (nil: the bucket's).
    let persistency: Persistency?

    init(geds: GEDS, persistency: Persistency?) {
        self.geds = geds
        self.persistency = persistency
    }
}

final class Writer: Handle {
    static let cName = "geds_writer_t"
    let writer: ObjectWriter
    init(_ writer: ObjectWriter) { self.writer = writer }
}

final class Reader: Handle {
    static let cName = "geds_reader_t"
    let reader: ObjectReader
    /// The node's event loop, where reads run (see `blocking`).
    let executor: (any TaskExecutor)?

    init(_ reader: ObjectReader, executor: (any TaskExecutor)?) {
        self.reader = reader
        self.executor = executor
    }
}

final class View: Handle {
    static let cName = "geds_view_t"
    let bytes: MappedBytes
    init(_ bytes: MappedBytes) { self.bytes = bytes }
}

/// One listing entry before it is handed to C.
struct Entry: Sendable {
    var kind: Int32
    var name: String
    var detail = ""
    var size: UInt64 = 0
    var modified: UInt64 = 0
}

/// Entries handed out one by one; a paged listing fetches its next page when the current one is used up.
final class Iterator: Handle {
    static let cName = "geds_iter_t"
    typealias NextPage = @Sendable (_ startAfter: String) async throws(GedsError) -> (entries: [Entry], nextStartAfter: String?)

    struct State: Sendable {
        var pending: ArraySlice<Entry>
        var nextStartAfter: String?
        /// The strings of the entry C holds now (malloc'd; addresses kept as numbers), freed on the next call.
        var current: (name: UInt, detail: UInt) = (0, 0)
    }

    let state: Mutex<State>
    let nextPage: NextPage?

    init(entries: [Entry], nextStartAfter: String? = nil, nextPage: NextPage? = nil) {
        state = Mutex(State(pending: entries[...], nextStartAfter: nextStartAfter))
        self.nextPage = nextPage
    }

    deinit {
        state.withLock { Iterator.release(&$0) }
    }

    static func release(_ state: inout State) {
        free(UnsafeMutableRawPointer(bitPattern: state.current.name))
        free(UnsafeMutableRawPointer(bitPattern: state.current.detail))
        state.current = (0, 0)
    }
}

#if canImport(Glibc)
import Glibc
#endif
