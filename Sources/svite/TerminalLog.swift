import Core
import Foundation
import Logging

/// swift-log's lines on standard error, in StreamLogHandler's form, written whole (one
/// write per line) and after the live progress bar has been cleared, so a log line never
/// glues itself to the bar.
struct TerminalLog: LogHandler {
    /// Set while a live bar is on the terminal (ProgressDisplay): writes a line with the
    /// bar out of its way.
    nonisolated(unsafe) private static var writer: (@Sendable (Data) -> Void)?
    static let lock = NSLock()

    static func setWriter(_ w: (@Sendable (Data) -> Void)?) { lock.withLock { writer = w } }

    let label: String
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]

    init(label: String, level: Logger.Level) { self.label = label; logLevel = level }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let all = metadata.merging(event.metadata ?? [:]) { _, new in new }
        let meta = all.isEmpty ? "" : " " + all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        let text = "\(localTimeText(format: "%Y-%m-%dT%H:%M:%S%z")) \(event.level) \(label):\(meta) [\(event.source)] \(event.message)\n"
        Self.lock.withLock {
            if let write = Self.writer { write(Data(text.utf8)) } else { FileHandle.standardError.write(Data(text.utf8)) }
        }
    }
}
