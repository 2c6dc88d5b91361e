// The functions of geds.h (CShims/CGeds/include/geds.h), in its order. Each checks its arguments, runs the
// Swift API (blocking the caller for async calls, see `blocking`), and turns a GedsError into its code.
import CGeds
@_spi(CABI) import GEDS
import GedsCore
import GedsNode
import Logging
#if canImport(Glibc)
import Glibc
#endif

// MARK: Arguments

public typealias CString = UnsafePointer<CChar>

func text(_ pointer: CString?, _ what: String) throws(GedsError) -> String {
    guard let pointer else { throw GedsError(.invalidArgument, "\(what) is NULL") }
    guard let value = String(validatingCString: pointer) else { throw GedsError(.invalidName, "\(what) is not valid UTF-8") }
    return value
}

/// The store and the object a call names.
func object(_ handle: OpaquePointer?, _ bucket: CString?, _ key: CString?) throws(GedsError) -> (GEDS, String, String) {
    (try Handles.find(handle, as: Store.self).geds, try text(bucket, "bucket"), try text(key, "key"))
}

func optionalText(_ pointer: CString?, _ what: String) throws(GedsError) -> String? {
    guard pointer != nil else { return nil }
    return try text(pointer, what)
}

func output<T>(_ pointer: UnsafeMutablePointer<T>?, _ what: String) throws(GedsError) -> UnsafeMutablePointer<T> {
    guard let pointer else { throw GedsError(.invalidArgument, "\(what) is NULL") }
    return pointer
}

func metadata(_ names: UnsafePointer<CString?>?, _ values: UnsafePointer<CString?>?, _ count: Int) throws(GedsError) -> [String: String] {
    guard count > 0 else {
        guard count == 0 else { throw GedsError(.invalidArgument, "metadata count \(UInt(bitPattern: count)) is too large") }
        return [:]
    }
    guard let names, let values else { throw GedsError(.invalidArgument, "metadata names or values are NULL") }
    var result: [String: String] = [:]
    for index in 0..<count {
        result[try text(names[index], "metadata name \(index)")] = try text(values[index], "metadata value \(index)")
    }
    return result
}

/// Runs a synchronous body; 0, or the failure's code.
func run(_ body: () throws(GedsError) -> Void) -> Int32 {
    do throws(GedsError) {
        try body()
        return 0
    } catch {
        return fail(error)
    }
}

/// Checks arguments synchronously, then blocks on the async operation they produce; 0, or the failure's code.
func runBlocking<Value: Sendable>(_ prepare: () throws(GedsError) -> sending () async throws(GedsError) -> Value,
                                  then deliver: (Value) throws(GedsError) -> Void = { _ in }) -> Int32 {
    run { () throws(GedsError) in
        let value = try blocking(try prepare()).get()
        try deliver(value)
    }
}

/// A byte count (or a failure's code) for the int64_t functions.
func count(_ body: () throws(GedsError) -> Int) -> Int64 {
    do throws(GedsError) {
        return Int64(try body())
    } catch {
        return Int64(fail(error))
    }
}

func buffer(_ pointer: UnsafeMutableRawPointer?, _ length: Int) throws(GedsError) -> UnsafeMutableRawBufferPointer {
    // size_t arrives as Int: above Int.max it turns negative.
    guard length >= 0 else { throw GedsError(.invalidArgument, "length \(UInt(bitPattern: length)) is too large") }
    guard let pointer else {
        guard length == 0 else { throw GedsError(.invalidArgument, "buffer is NULL") }
        return UnsafeMutableRawBufferPointer(start: nil, count: 0)
    }
    return UnsafeMutableRawBufferPointer(start: pointer, count: length)
}

// MARK: Library

/// Made once and never freed or changed, so handing it out from any thread is safe.
private nonisolated(unsafe) let versionText = UnsafePointer(strdup("GEDS \(GedsVersion.release) (ABI \(GEDS_ABI_VERSION))")!)

@_cdecl("geds_version")
public func gedsVersion() -> CString { versionText }

@_cdecl("geds_abi_version")
public func gedsABIVersion() -> Int32 { Int32(GEDS_ABI_VERSION) }

// MARK: Connecting

@_cdecl("geds_config_init")
public func gedsConfigInit(_ config: UnsafeMutablePointer<geds_config_t>?) {
    config?.pointee = geds_config_t()
}

@_cdecl("geds_connect")
public func gedsConnect(_ mds: CString?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    var config = geds_config_t()
    config.mds = mds
    return gedsConnectConfig(&config, out)
}

@_cdecl("geds_connect_config")
public func gedsConnectConfig(_ config: UnsafePointer<geds_config_t>?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    runBlocking { () throws(GedsError) in
        let options = try output(UnsafeMutablePointer(mutating: config), "config").pointee
        _ = try output(out, "out")
        let mds = try optionalText(options.mds, "mds") ?? getenv("GEDS_MDS").map { String(cString: $0) } ?? "127.0.0.1:4381"
        guard options.timeout_ms >= 0 else { throw GedsError(.invalidArgument, "negative timeout_ms \(options.timeout_ms)") }
        let configuration = NodeConfiguration(
            mds: try Endpoint(parsing: mds), tier0Directory: try optionalText(options.tier0_dir, "tier0_dir"),
            name: try optionalText(options.name, "name"), hostID: try optionalText(options.host_id, "host_id"),
            role: .embedded, timeoutMilliseconds: options.timeout_ms == 0 ? 10_000 : options.timeout_ms,
            tier0Capacity: options.tier0_capacity == 0 ? nil : options.tier0_capacity,
            transport: try NodeConfiguration.Transport(parsing: try optionalText(options.transport, "transport") ?? "auto"))
        let persistency = try optionalText(options.persistency, "persistency").map { (name) throws(GedsError) in
            try Persistency(parsing: name)
        }
        return { () async throws(GedsError) in
            Store(geds: try await GEDS.connect(configuration, logger: libraryLogger()), persistency: persistency)
        }
    } then: { store in
        out?.pointee = Handles.register(store)
    }
}

/// Warnings and errors on stderr, never stdout (which belongs to the program); `GEDS_LOG=info|debug|trace` for more.
func libraryLogger() -> Logger {
    var logger = Logger(label: "geds", factory: { StreamLogHandler.standardError(label: $0) })
    logger.logLevel = getenv("GEDS_LOG").flatMap { Logger.Level(rawValue: String(cString: $0)) } ?? .warning
    return logger
}

@_cdecl("geds_close")
public func gedsClose(_ handle: OpaquePointer?) {
    _ = runBlocking { () throws(GedsError) in
        let store = try Handles.remove(handle, as: Store.self)
        return { () async throws(GedsError) in await store.geds.close() }
    }
}

// MARK: Buckets

@_cdecl("geds_create_bucket")
public func gedsCreateBucket(_ handle: OpaquePointer?, _ bucket: CString?) -> Int32 {
    runBlocking { () throws(GedsError) in
        let (geds, bucket) = (try Handles.find(handle, as: Store.self).geds, try text(bucket, "bucket"))
        return { () async throws(GedsError) in
            do throws(GedsError) {
                try await geds.createBucket(bucket)
            } catch where error.code == .bucketExists {}
        }
    }
}

@_cdecl("geds_delete_bucket")
public func gedsDeleteBucket(_ handle: OpaquePointer?, _ bucket: CString?, _ force: Int32) -> Int32 {
    runBlocking { () throws(GedsError) in
        let (geds, bucket) = (try Handles.find(handle, as: Store.self).geds, try text(bucket, "bucket"))
        return { () async throws(GedsError) in try await geds.deleteBucket(bucket, force: force != 0) }
    }
}

@_cdecl("geds_list_buckets")
public func gedsListBuckets(_ handle: OpaquePointer?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    runBlocking { () throws(GedsError) in
        let geds = try Handles.find(handle, as: Store.self).geds
        _ = try output(out, "out")
        return { () async throws(GedsError) in try await geds.listBuckets() }
    } then: { names in
        out?.pointee = Handles.register(Iterator(entries: names.map { Entry(kind: Int32(GEDS_ENTRY_BUCKET), name: $0) }))
    }
}

// MARK: Writing

@_cdecl("geds_create")
public func gedsCreate(_ handle: OpaquePointer?, _ bucket: CString?, _ key: CString?,
                       _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    gedsCreateFlags(handle, bucket, key, 0, out)
}

@_cdecl("geds_create_flags")
public func gedsCreateFlags(_ handle: OpaquePointer?, _ bucket: CString?, _ key: CString?, _ flags: UInt32,
                            _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    runBlocking { () throws(GedsError) in
        let store = try Handles.find(handle, as: Store.self)
        let (bucket, key) = (try text(bucket, "bucket"), try text(key, "key"))
        _ = try output(out, "out")
        let (exclusive, replicas) = try createOptions(flags, of: "geds_create_flags")
        return { () async throws(GedsError) in
            Writer(try await store.geds.create(bucket: bucket, key: key, persistency: store.persistency, exclusive: exclusive,
                                               replicas: replicas))
        }
    } then: { writer in
        out?.pointee = Handles.register(writer)
    }
}

/// The GEDS_CREATE_* flags of `function`: create-if-absent, and the replicas (bits 8 to 15: GEDS_CREATE_REPLICAS(n)).
private func createOptions(_ flags: UInt32, of function: String) throws(GedsError) -> (exclusive: Bool, replicas: Replicas?) {
    let replicaBits: UInt32 = 0xFF << 8
    guard flags & ~(UInt32(GEDS_CREATE_EXCLUSIVE) | UInt32(GEDS_CREATE_ASYNC_REPLICAS) | replicaBits) == 0 else {
        throw GedsError(.invalidArgument, "unknown \(function) flags 0x\(String(flags, radix: 16))")
    }
    let copies = Int((flags & replicaBits) >> 8)
    let replicas = copies == 0 ? nil
        : try Replicas(copies: copies, waitForAll: flags & UInt32(GEDS_CREATE_ASYNC_REPLICAS) == 0)
    return (flags & UInt32(GEDS_CREATE_EXCLUSIVE) != 0, replicas)
}

@_cdecl("geds_put")
public func gedsPut(_ handle: OpaquePointer?, _ bucket: CString?, _ key: CString?, _ bytes: UnsafeRawPointer?, _ length: Int) -> Int32 {
    gedsPutFlags(handle, bucket, key, bytes, length, 0, nil, nil, 0)
}

@_cdecl("geds_put_flags")
public func gedsPutFlags(_ handle: OpaquePointer?, _ bucket: CString?, _ key: CString?, _ bytes: UnsafeRawPointer?, _ length: Int,
                         _ flags: UInt32, _ names: UnsafePointer<CString?>?, _ values: UnsafePointer<CString?>?,
                         _ count: Int) -> Int32 {
    run { () throws(GedsError) in
        let store = try Handles.find(handle, as: Store.self)
        let (geds, bucket, key) = (store.geds, try text(bucket, "bucket"), try text(key, "key"))
        // The caller's buffer outlives this blocking call; only the put reads it meanwhile.
        nonisolated(unsafe) let source = UnsafeRawBufferPointer(try buffer(UnsafeMutableRawPointer(mutating: bytes), length))
        let (exclusive, replicas) = try createOptions(flags, of: "geds_put_flags")
        let metadata = try metadata(names, values, count)
        // On the node's event loop (no hand-offs for its MDS round trip); attached, all on this thread.
        try blocking(on: geds.readExecutor) { () async throws(GedsError) in
            try await geds.put(ObjectPath(bucket: BucketName(bucket), key: ObjectKey(key)), from: source, metadata: metadata,
                               persistency: store.persistency, exclusive: exclusive, replicas: replicas)
        }.get()
    }
}

@_cdecl("geds_write")
public func gedsWrite(_ handle: OpaquePointer?, _ bytes: UnsafeRawPointer?, _ length: Int, _ offset: UInt64) -> Int32 {
    run { () throws(GedsError) in
        let writer = try Handles.find(handle, as: Writer.self).writer
        try writer.write(UnsafeRawBufferPointer(try buffer(UnsafeMutableRawPointer(mutating: bytes), length)), at: offset)
    }
}

@_cdecl("geds_truncate")
public func gedsTruncate(_ handle: OpaquePointer?, _ size: UInt64) -> Int32 {
    run { () throws(GedsError) in try Handles.find(handle, as: Writer.self).writer.truncate(to: size) }
}

@_cdecl("geds_writer_size")
public func gedsWriterSize(_ handle: OpaquePointer?, _ size: UnsafeMutablePointer<UInt64>?) -> Int32 {
    reportSize(handle, Writer.self, size) { $0.writer.size }
}

@_cdecl("geds_seal")
public func gedsSeal(_ handle: OpaquePointer?) -> Int32 {
    gedsSealMetadata(handle, nil, nil, 0)
}

@_cdecl("geds_seal_metadata")
public func gedsSealMetadata(_ handle: OpaquePointer?, _ names: UnsafePointer<CString?>?, _ values: UnsafePointer<CString?>?,
                             _ count: Int) -> Int32 {
    runBlocking { () throws(GedsError) in
        let metadata = try metadata(names, values, count)
        let writer = try Handles.remove(handle, as: Writer.self).writer
        return { () async throws(GedsError) in try await writer.seal(metadata: metadata) }
    }
}

@_cdecl("geds_writer_discard")
public func gedsWriterDiscard(_ handle: OpaquePointer?) {
    _ = runBlocking { () throws(GedsError) in
        let writer = try Handles.remove(handle, as: Writer.self).writer
        return { () async throws(GedsError) in try await writer.abort() }
    }
}

// MARK: Reading

@_cdecl("geds_open")
public func gedsOpen(_ handle: OpaquePointer?, _ bucket: CString?, _ key: CString?,
                     _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    run { () throws(GedsError) in
        let (geds, bucket, key) = try object(handle, bucket, key)
        _ = try output(out, "out")
        let executor = geds.readExecutor
        // The lookup on this thread when it can be (no hand-off to the event loop and back), else on the loop.
        let reader: ObjectReader
        if let direct = try geds.openOnCallerThread(bucket: bucket, key: key) {
            reader = direct
        } else {
            reader = try blocking { () async throws(GedsError) in try await geds.open(bucket: bucket, key: key) }.get()
        }
        out?.pointee = Handles.register(Reader(reader, executor: executor))
    }
}

@_cdecl("geds_reader_size")
public func gedsReaderSize(_ handle: OpaquePointer?, _ size: UnsafeMutablePointer<UInt64>?) -> Int32 {
    reportSize(handle, Reader.self, size) { $0.reader.size }
}

/// geds_writer_size and geds_reader_size.
func reportSize<H: Handle>(_ handle: OpaquePointer?, _ type: H.Type, _ size: UnsafeMutablePointer<UInt64>?,
                           _ sizeOf: (H) -> UInt64) -> Int32 {
    run { () throws(GedsError) in
        let held = try Handles.find(handle, as: type)
        try output(size, "size").pointee = sizeOf(held)
    }
}

@_cdecl("geds_read")
public func gedsRead(_ handle: OpaquePointer?, _ bytes: UnsafeMutableRawPointer?, _ length: Int, _ offset: UInt64) -> Int64 {
    count { () throws(GedsError) in
        let handle = try Handles.find(handle, as: Reader.self)
        let reader = handle.reader
        // The caller's buffer outlives this blocking call; only the read writes it meanwhile.
        nonisolated(unsafe) let destination = try buffer(bytes, length)
        return try blocking(on: handle.executor) { () async throws(GedsError) in
            try await reader.read(at: offset, into: destination)
        }.get()
    }
}

@_cdecl("geds_reader_close")
public func gedsReaderClose(_ handle: OpaquePointer?) {
    _ = run { () throws(GedsError) in _ = try Handles.remove(handle, as: Reader.self) }
}

@_cdecl("geds_read_object")
public func gedsReadObject(_ handle: OpaquePointer?, _ bucket: CString?, _ key: CString?, _ bytes: UnsafeMutableRawPointer?,
                           _ length: Int, _ offset: UInt64) -> Int64 {
    count { () throws(GedsError) in
        let (geds, bucket, key) = try object(handle, bucket, key)
        nonisolated(unsafe) let destination = try buffer(bytes, length)
        let executor = geds.readExecutor
        // Looked up on this thread when it can be: an object whose bytes came with the lookup is then read with
        // no hand-off at all (the read below does not suspend); else lookup and read both run on the loop.
        if let reader = try geds.openOnCallerThread(bucket: bucket, key: key) {
            return try blocking(on: executor) { () async throws(GedsError) in
                try await reader.read(at: offset, into: destination)
            }.get()
        }
        return try blocking(on: executor) { () async throws(GedsError) in
            try await geds.read(bucket: bucket, key: key, at: offset, into: destination)
        }.get()
    }
}

@_cdecl("geds_view")
public func gedsView(_ handle: OpaquePointer?, _ out: UnsafeMutablePointer<OpaquePointer?>?,
                     _ data: UnsafeMutablePointer<UnsafeRawPointer?>?, _ size: UnsafeMutablePointer<UInt64>?) -> Int32 {
    runBlocking { () throws(GedsError) in
        let reader = try Handles.find(handle, as: Reader.self).reader
        (_, _, _) = (try output(out, "out"), try output(data, "data"), try output(size, "size"))
        return { () async throws(GedsError) in View(try await reader.view()) }
    } then: { view in
        data?.pointee = UnsafeRawPointer(view.bytes.base)
        size?.pointee = UInt64(view.bytes.count)
        out?.pointee = Handles.register(view)
    }
}

@_cdecl("geds_view_release")
public func gedsViewRelease(_ handle: OpaquePointer?) {
    _ = run { () throws(GedsError) in _ = try Handles.remove(handle, as: View.self) }
}

// MARK: Namespace

@_cdecl("geds_stat")
public func gedsStat(_ handle: OpaquePointer?, _ bucket: CString?, _ key: CString?, _ out: UnsafeMutablePointer<geds_stat_t>?) -> Int32 {
    runBlocking { () throws(GedsError) in
        let (geds, bucket, key) = try object(handle, bucket, key)
        _ = try output(out, "out")
        return { () async throws(GedsError) in try await geds.stat(bucket: bucket, key: key) }
    } then: { info in
        out?.pointee = geds_stat_t(size: info.size, modified_ms: info.modified, locations: UInt32(clamping: info.locations.count),
                                   metadata_count: UInt32(clamping: info.metadata.count))
    }
}

@_cdecl("geds_list")
public func gedsList(_ handle: OpaquePointer?, _ bucket: CString?, _ prefix: CString?, _ delimiter: CString?,
                     _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    runBlocking { () throws(GedsError) in
        let geds = try Handles.find(handle, as: Store.self).geds
        let bucket = try text(bucket, "bucket")
        let prefix = try optionalText(prefix, "prefix") ?? "", delimiter = try optionalText(delimiter, "delimiter") ?? ""
        _ = try output(out, "out")
        let nextPage: Iterator.NextPage = { (startAfter) async throws(GedsError) in
            let page = try await geds.list(bucket: bucket, prefix: prefix, delimiter: delimiter, startAfter: startAfter)
            let entries = page.objects.map { Entry(kind: Int32(GEDS_ENTRY_OBJECT), name: $0.key, size: $0.size, modified: $0.modified) }
                + page.commonPrefixes.map { Entry(kind: Int32(GEDS_ENTRY_PREFIX), name: $0) }
            return (entries.sorted { $0.name < $1.name }, page.nextStartAfter)
        }
        return { () async throws(GedsError) in
            let first = try await nextPage("")
            return Iterator(entries: first.entries, nextStartAfter: first.nextStartAfter, nextPage: nextPage)
        }
    } then: { iterator in
        out?.pointee = Handles.register(iterator)
    }
}

@_cdecl("geds_next")
public func gedsNext(_ handle: OpaquePointer?, _ entry: UnsafeMutablePointer<geds_entry_t>?) -> Int32 {
    do throws(GedsError) {
        let iterator = try Handles.find(handle, as: Iterator.self)
        let entry = try output(entry, "entry")
        // Fetch the next page outside the lock (an iterator is used by one thread at a time).
        let fetch = iterator.state.withLock { state -> String? in
            Iterator.release(&state)
            return state.pending.isEmpty ? state.nextStartAfter : nil
        }
        if let startAfter = fetch, let nextPage = iterator.nextPage {
            let page = try blocking { () async throws(GedsError) in try await nextPage(startAfter) }.get()
            iterator.state.withLock { state in
                state.pending = page.entries[...]
                state.nextStartAfter = page.nextStartAfter
            }
        }
        return iterator.state.withLock { state -> Int32 in
            guard let next = state.pending.popFirst() else { return 0 }
            let (name, detail) = (strdup(next.name), strdup(next.detail))
            state.current = (UInt(bitPattern: name), UInt(bitPattern: detail))
            entry.pointee = geds_entry_t(kind: next.kind, name: name, detail: detail, size: next.size, modified_ms: next.modified)
            return 1
        }
    } catch {
        return fail(error)
    }
}

@_cdecl("geds_iter_close")
public func gedsIterClose(_ handle: OpaquePointer?) {
    _ = run { () throws(GedsError) in _ = try Handles.remove(handle, as: Iterator.self) }
}

@_cdecl("geds_delete")
public func gedsDelete(_ handle: OpaquePointer?, _ bucket: CString?, _ key: CString?) -> Int32 {
    runBlocking { () throws(GedsError) in
        let (geds, bucket, key) = try object(handle, bucket, key)
        return { () async throws(GedsError) in try await geds.delete(bucket: bucket, key: key) }
    }
}

@_cdecl("geds_delete_prefix")
public func gedsDeletePrefix(_ handle: OpaquePointer?, _ bucket: CString?, _ prefix: CString?,
                             _ deleted: UnsafeMutablePointer<UInt64>?) -> Int32 {
    runBlocking { () throws(GedsError) in
        let geds = try Handles.find(handle, as: Store.self).geds
        let (bucket, prefix) = (try text(bucket, "bucket"), try text(prefix, "prefix"))
        return { () async throws(GedsError) in try await geds.delete(bucket: bucket, prefix: prefix) }
    } then: { count in
        deleted?.pointee = count
    }
}

@_cdecl("geds_rename")
public func gedsRename(_ handle: OpaquePointer?, _ bucket: CString?, _ key: CString?, _ toBucket: CString?, _ toKey: CString?) -> Int32 {
    objectToObject(handle, bucket, key, toBucket, toKey) { (geds, from, to) async throws(GedsError) in
        try await geds.rename(bucket: from.bucket, key: from.key, toBucket: to.bucket, toKey: to.key)
    }
}

@_cdecl("geds_copy")
public func gedsCopy(_ handle: OpaquePointer?, _ bucket: CString?, _ key: CString?, _ toBucket: CString?, _ toKey: CString?) -> Int32 {
    objectToObject(handle, bucket, key, toBucket, toKey) { (geds, from, to) async throws(GedsError) in
        try await geds.copy(bucket: from.bucket, key: from.key, toBucket: to.bucket, toKey: to.key)
    }
}

/// Rename and copy: an operation from one object's name to another's.
func objectToObject(_ handle: OpaquePointer?, _ bucket: CString?, _ key: CString?, _ toBucket: CString?, _ toKey: CString?,
                    _ operation: @escaping @Sendable (GEDS, _ from: (bucket: String, key: String), _ to: (bucket: String, key: String))
                        async throws(GedsError) -> Void) -> Int32 {
    runBlocking { () throws(GedsError) in
        let (geds, bucket, key) = try object(handle, bucket, key)
        let to = (bucket: try text(toBucket, "to_bucket"), key: try text(toKey, "to_key"))
        return { () async throws(GedsError) in try await operation(geds, (bucket, key), to) }
    }
}

// MARK: Metadata

@_cdecl("geds_metadata_get")
public func gedsMetadataGet(_ handle: OpaquePointer?, _ bucket: CString?, _ key: CString?, _ name: CString?,
                            _ value: UnsafeMutablePointer<CChar>?, _ capacity: Int) -> Int64 {
    count { () throws(GedsError) in
        let (geds, bucket, key) = try object(handle, bucket, key)
        let name = try text(name, "name")
        let destination = try buffer(UnsafeMutableRawPointer(value), capacity)
        let metadata = try blocking { () async throws(GedsError) in try await geds.metadata(bucket: bucket, key: key) }.get()
        guard let found = metadata[name] else {
            throw GedsError(.invalidArgument, "\(bucket)/\(key) has no metadata named '\(name)'")
        }
        let bytes = Array(found.utf8)
        if destination.count > 0 {
            let copied = min(bytes.count, destination.count - 1)
            destination.copyBytes(from: bytes[..<copied])
            destination[copied] = 0
        }
        return bytes.count
    }
}

@_cdecl("geds_metadata_set")
public func gedsMetadataSet(_ handle: OpaquePointer?, _ bucket: CString?, _ key: CString?, _ names: UnsafePointer<CString?>?,
                            _ values: UnsafePointer<CString?>?, _ count: Int) -> Int32 {
    runBlocking { () throws(GedsError) in
        let (geds, bucket, key) = try object(handle, bucket, key)
        let metadata = try metadata(names, values, count)
        return { () async throws(GedsError) in try await geds.setMetadata(bucket: bucket, key: key, metadata) }
    }
}

@_cdecl("geds_metadata_list")
public func gedsMetadataList(_ handle: OpaquePointer?, _ bucket: CString?, _ key: CString?,
                             _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    iterateObject(handle, bucket, key, out) { info in
        info.metadata.sorted { $0.key < $1.key }.map { Entry(kind: Int32(GEDS_ENTRY_METADATA), name: $0.key, detail: $0.value) }
    }
}

/// An iterator over what an object's record holds (its metadata, its locations).
func iterateObject(_ handle: OpaquePointer?, _ bucket: CString?, _ key: CString?, _ out: UnsafeMutablePointer<OpaquePointer?>?,
                   _ entries: (ObjectInfo) -> [Entry]) -> Int32 {
    runBlocking { () throws(GedsError) in
        let (geds, bucket, key) = try object(handle, bucket, key)
        _ = try output(out, "out")
        return { () async throws(GedsError) in try await geds.stat(bucket: bucket, key: key) }
    } then: { info in
        out?.pointee = Handles.register(Iterator(entries: entries(info)))
    }
}

// MARK: Placement and persistence

@_cdecl("geds_locations")
public func gedsLocations(_ handle: OpaquePointer?, _ bucket: CString?, _ key: CString?,
                          _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    iterateObject(handle, bucket, key, out) { info in
        info.locations.map { location in
            switch location {
            case .node(let copy):
                let rdma = copy.rdma.map { " rdma://\($0.endpoint)" } ?? ""
                return Entry(kind: Int32(GEDS_ENTRY_LOCATION), name: copy.node,
                             detail: "\(copy.tier) tcp://\(copy.tcp)\(rdma) host=\(copy.hostID)")
            case .s3(let object):
                return Entry(kind: Int32(GEDS_ENTRY_LOCATION), name: object.url, detail: "s3 region=\(object.region)")
            }
        }
    }
}

@_cdecl("geds_relocate")
public func gedsRelocate(_ handle: OpaquePointer?, _ bucket: CString?, _ key: CString?, _ node: CString?) -> Int32 {
    runBlocking { () throws(GedsError) in
        let (geds, bucket, key) = try object(handle, bucket, key)
        let node = try optionalText(node, "node")
        return { () async throws(GedsError) in
            try await geds.relocate(bucket: bucket, key: key, to: try await geds.relocationTarget(named: node))
        }
    }
}

@_cdecl("geds_set_bucket_storage")
public func gedsSetBucketStorage(_ handle: OpaquePointer?, _ bucket: CString?, _ s3: CString?, _ prefix: CString?,
                                 _ region: CString?, _ persistency: CString?) -> Int32 {
    runBlocking { () throws(GedsError) in
        let geds = try Handles.find(handle, as: Store.self).geds
        let bucket = try text(bucket, "bucket")
        let storage = try optionalText(s3, "s3").map { (address) throws(GedsError) in
            try BucketStorage(address: address, prefix: try optionalText(prefix, "prefix"),
                              region: try optionalText(region, "region") ?? "us-east-1",
                              persistency: try Persistency(parsing: try optionalText(persistency, "persistency") ?? "write-back"))
        }
        return { () async throws(GedsError) in try await geds.setBucketStorage(bucket, storage) }
    }
}

@_cdecl("geds_flush")
public func gedsFlush(_ handle: OpaquePointer?, _ timeoutMilliseconds: UInt64) -> Int32 {
    runBlocking { () throws(GedsError) in
        let geds = try Handles.find(handle, as: Store.self).geds
        return { () async throws(GedsError) in
            try await geds.flush(timeoutMilliseconds: timeoutMilliseconds == 0 ? 300_000 : timeoutMilliseconds)
        }
    }
}
