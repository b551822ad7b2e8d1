import Wire

/// What `svite --version` prints: the release, and the wire protocol a coordinator and
/// its workers must share (a frame of another version is refused and named).
enum SviteVersion {
    static let release = "0.4.0"
    static var description: String { "svite \(release) (wire protocol \(FrameHeader.protocolVersion))" }
}
