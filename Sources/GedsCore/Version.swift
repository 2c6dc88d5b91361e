/// The release of this build, as the executables' `--version` and the C ABI's `geds_version()` report it.
public enum GedsVersion {
    public static let release = "0.1.0"
}
