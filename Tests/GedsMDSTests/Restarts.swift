import GedsCore
@testable import GedsMDS
import NIOCore

/// What a restarted MDS has of `records`: replayed from a journal, and the snapshot of that store restored.
func restarted(from records: [JournalFormat.Record]) throws -> (replayed: MetadataStore, restored: MetadataStore) {
    var buffer = ByteBuffer()
    JournalFormat.write(JournalFormat.Header(kind: .journal, epoch: 3, generation: 1, revision: 0), into: &buffer)
    for record in records { JournalFormat.append(record, to: &buffer) }
    var replayed = MetadataStore(epoch: 4)
    _ = try JournalFormat.forEachRecord(in: buffer) { (record) throws(GedsError) in try replayed.replay(record) }
    var snapshot = ByteBuffer()
    JournalFormat.write(JournalFormat.Header(kind: .snapshot, epoch: 1, generation: 1, revision: 0), into: &snapshot)
    replayed.writeSnapshotRecords(into: &snapshot)
    var restored = MetadataStore(epoch: 5)
    try restored.restore(snapshot: snapshot, revision: replayed.events.revision)
    return (replayed, restored)
}
