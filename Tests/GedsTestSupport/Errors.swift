import GedsCore

/// Runs `body` and returns the GedsError it threw (anything else comes back as `.internal`), or nil.
public func gedsError(_ body: () throws -> Void) -> GedsError? {
    do {
        try body()
        return nil
    } catch {
        return GedsError.wrapping(error)
    }
}

/// Runs `body` and returns the GedsError it threw (anything else comes back as `.internal`), or nil.
public func gedsError(_ body: () async throws -> Void) async -> GedsError? {
    do {
        try await body()
        return nil
    } catch {
        return GedsError.wrapping(error)
    }
}
