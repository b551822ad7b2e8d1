import Foundation
import Transport

/// The status document a REP socket serves to `svite status`: the run's progress (from
/// the trainer's events) and each worker as membership knows it.
enum StatusServer {
    static func document(run: RunStatus?, runID: UInt64, endpoint: String, badFrames: Int,
                         workers: [WorkerRecord], now: Double) -> [String: Any] {
        var doc = run?.document ?? [:]
        doc["run_id"] = String(runID, radix: 16)
        doc["endpoint"] = endpoint
        doc["bad_frames"] = badFrames
        doc["workers"] = workers.map { w in
            ["id": w.name, "rank": w.rank, "host": w.host, "pid": Int(w.pid), "threads": w.threads, "state": w.state.rawValue,
             "seconds_since_heard": (now - w.lastHeard).rounded(toPlaces: 2), "steps_done": w.stepsDone, "joins": w.joins, "share": w.share,
             "images_per_second": (w.throughput ?? 0).rounded(toPlaces: 1),
             "bytes_up": w.bytesUp, "bytes_down": w.bytesDown] as [String: Any]
        }
        return doc
    }

    /// Answers one query waiting on `socket` (a REP socket must answer before it reads again).
    static func answer(_ socket: ZMQSocket, with doc: [String: Any]) throws {
        let data = (try? JSONSerialization.data(withJSONObject: doc, options: [.sortedKeys])) ?? Data("{}".utf8)
        _ = try socket.send([Array(data)])
    }
}

extension Double {
    func rounded(toPlaces p: Int) -> Double {
        let f = Foundation.pow(10.0, Double(p))
        return (self * f).rounded() / f
    }
}
