import ArgumentParser
import GedsCarrier
import GedsCore
import GedsTCP

/// The deployment's security options every GEDS program takes (`@OptionGroup`): the token and the TLS files,
/// each defaulting to its environment variable when the option is not given.
public struct SecurityOptions: ParsableArguments {
    @Option(name: .customLong("token-file"), help: ArgumentHelp(DeploymentToken.optionHelp))
    public var tokenFile: String?

    @Option(name: .customLong("tls-cert"), help: ArgumentHelp(TransportSecurity.certificateHelp))
    public var tlsCert: String?

    @Option(name: .customLong("tls-key"), help: ArgumentHelp(TransportSecurity.keyHelp))
    public var tlsKey: String?

    @Option(name: .customLong("tls-ca"), help: ArgumentHelp(TransportSecurity.authorityHelp))
    public var tlsCA: String?

    public init() {}

    public var tlsFiles: TransportSecurity.Files {
        TransportSecurity.Files(certificate: tlsCert, key: tlsKey, authority: tlsCA)
    }

    /// The token to prove and demand: the file's, else `$GEDS_TOKEN_FILE`'s; nil for an open deployment.
    public func token() throws(GedsError) -> DeploymentToken? {
        try DeploymentToken.resolve(tokenFile: tokenFile)
    }

    /// TLS from the files, else from `$GEDS_TLS_*`; nil for plain TCP.
    public func tls() throws(GedsError) -> TransportSecurity? {
        try TransportSecurity.resolve(tlsFiles)
    }
}
