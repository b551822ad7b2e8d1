import Core
import Foundation
import Logging

/// RUN_DIR/status.endpoint: the status endpoint of the coordinator running that run, written
/// when it binds and removed when it ends, so `svite status RUN_DIR` finds a run whose port
/// was chosen at random (`svite train` binds tcp://127.0.0.1:*).
enum StatusFile {
    static func path(_ runDirectory: String) -> String { "\(runDirectory)/status.endpoint" }

    /// A wildcard address becomes loopback: the file is read on this machine.
    static func write(_ endpoint: String, runDirectory: String, log: Logger) {
        let local = endpoint.replacingOccurrences(of: "0.0.0.0", with: "127.0.0.1").replacingOccurrences(of: "*", with: "127.0.0.1")
        do {
            // Before the first step the trainer may not have made the directory yet.
            try FileManager.default.createDirectory(atPath: runDirectory, withIntermediateDirectories: true)
            try AtomicFile.write(path(runDirectory), data: Data((local + "\n").utf8))
        } catch {
            // Monitoring is not worth stopping a run for.
            log.warning("could not write \(path(runDirectory)) (svite status RUN_DIR will not find this run; use --connect \(local)): \(error)")
        }
    }

    static func remove(runDirectory: String) { try? FileManager.default.removeItem(atPath: path(runDirectory)) }

    static func read(runDirectory: String) throws -> String {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: runDirectory, isDirectory: &isDir), isDir.boolValue else {
            throw CommandFailure("\(runDirectory) is not a run directory")
        }
        guard let data = FileManager.default.contents(atPath: path(runDirectory)) else {
            throw CommandFailure("\(runDirectory) has no status.endpoint: its coordinator is not running (svite train and svite coordinator write it while they run); for a coordinator elsewhere use --connect")
        }
        let endpoint = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard endpoint.hasPrefix("tcp://") || endpoint.hasPrefix("ipc://") else {
            throw CommandFailure("\(path(runDirectory)) does not hold an endpoint: '\(endpoint.prefix(80))'")
        }
        return endpoint
    }
}
