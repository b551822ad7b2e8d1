import Core
import Foundation

/// Metrics as JSON lines, one object per line, appended and flushed as they happen so a
/// crash loses at most the line being written.
public final class MetricsLog: @unchecked Sendable {
    public let path: String
    let handle: FileHandle

    /// Opens (creating) the log. `keepThroughStep`: when resuming, lines of steps after
    /// the checkpoint are dropped first, since those steps will run again.
    public init(path: String, keepThroughStep: Int? = nil) throws {
        self.path = path
        let fm = FileManager.default
        if let last = keepThroughStep, let data = fm.contents(atPath: path) {
            let kept = String(decoding: data, as: UTF8.self).split(separator: "\n").filter { line in
                guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                      let step = obj["step"] as? Int else { return false }
                return step <= last
            }
            try AtomicFile.write(path, data: Data((kept.joined(separator: "\n") + (kept.isEmpty ? "" : "\n")).utf8))
        } else if keepThroughStep == nil {
            _ = fm.createFile(atPath: path, contents: nil)
        }
        if !fm.fileExists(atPath: path) { _ = fm.createFile(atPath: path, contents: nil) }
        guard let h = FileHandle(forWritingAtPath: path) else {
            throw CheckpointError(path: path, message: "cannot open the metrics log for writing")
        }
        h.seekToEndOfFile()
        handle = h
    }

    deinit { try? handle.close() }

    /// Writes one record; keys sorted so lines diff cleanly.
    public func write(_ record: [String: Any]) {
        guard let data = try? JSONSerialization.data(withJSONObject: record, options: [.sortedKeys]) else { return }
        handle.write(data + Data("\n".utf8))
    }

    /// Reads every record of a log (for tools and tests).
    public static func read(_ path: String) -> [[String: Any]] {
        guard let data = FileManager.default.contents(atPath: path) else { return [] }
        return String(decoding: data, as: UTF8.self).split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }
}

import Model

