import Foundation
import Transport

/// The status document a REP socket serves to `svite status`: the run's progress (from
/// the trainer's events) and each worker as membership knows it.
enum StatusServer {
    static func document(run: RunStatus?, runID: UInt64, endpoint: String, badFrames: Int,
                         workers: [WorkerRecord], curve: StatusDocument.CurveStatus? = nil, now: Double) -> StatusDocument {
        var doc = run?.document ?? StatusDocument()
        doc.runId = String(runID, radix: 16)
        doc.endpoint = endpoint
        doc.badFrames = badFrames
        doc.curve = curve
        doc.workers = workers.map { w in
            .init(id: w.name, rank: w.rank, host: w.host, pid: Int(w.pid), threads: w.threads,
                  state: w.phase(at: now),
                  secondsSinceHeard: (now - w.lastHeard).rounded(toPlaces: 2), stepsDone: w.stepsDone, refused: w.refused, joins: w.joins,
                  share: w.share, imagesPerSecond: (w.throughput ?? 0).rounded(toPlaces: 1), bytesUp: w.bytesUp, bytesDown: w.bytesDown,
                  secondsSinceAnswer: w.deadline.lastAnswer.map { (now - $0).rounded(toPlaces: 2) },
                  missedSteps: w.deadline.missedSteps > 0 ? w.deadline.missedSteps : nil,
                  missedImages: w.deadline.missedSteps > 0 ? w.deadline.missedImages : nil)
        }
        return doc
    }

    /// Answers one query waiting on `socket` (a REP socket must answer before it reads again).
    static func answer(_ socket: ZMQSocket, with doc: StatusDocument) throws {
        _ = try socket.send([Array(doc.encoded())])
    }
}

extension Double {
    func rounded(toPlaces p: Int) -> Double {
        let f = Foundation.pow(10.0, Double(p))
        return (self * f).rounded() / f
    }
}
