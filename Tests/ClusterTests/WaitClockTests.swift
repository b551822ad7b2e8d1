import Foundation
import Testing
import TestSupport
@testable import Coordinator
@testable import Training

extension ClusterTests {
    /// The run's clock starts at the first step: a coordinator that waits for its worker
    /// says so (`waiting` events, the status's state), and elapsed time, the checkpoint's
    /// and the end record's seconds leave the wait out (the end record names it).
    @Test func theClockLeavesOutTheWaitForWorkers() throws {
        try withTemporaryDirectory { dir in
            try writeSyntheticIDX(dir: dir, train: 64, test: 16)
            let config = try tinyRunConfig(dataDir: dir, extra: ["training.epochs=0", "training.max_steps=4", "training.batch_size=16"])
            let source = try cluster(config, workers: 1, timeout: 3)
            let status = RunStatus(config: config, parameters: 1)
            let events = EventBox()
            let box = TrainerBox(try trainer(config, dir: "\(dir)/run", source: source))
            let wall = Date()
            let runner = Thread {
                events.summary = try? box.trainer.run { e in
                    status.observe(e)
                    events.append(e)
                }
            }
            runner.start()
            let deadline = Date().addingTimeInterval(10)
            while status.document.stateText != "waiting for workers (0/1)" && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
            #expect(status.document.stateText == "waiting for workers (0/1)")
            Thread.sleep(forTimeInterval: 2)
            let worker = workerThread(source.endpoint, name: "late")
            while runner.isExecuting || worker.isExecuting { Thread.sleep(forTimeInterval: 0.01) }
            let total = Date().timeIntervalSince(wall)
            let summary = try #require(events.summary)
            #expect(summary.steps == 4 && summary.waitedSeconds >= 2 && summary.waitedSeconds < total)
            #expect(summary.elapsedSeconds <= total - 2 + 0.05, "elapsed \(summary.elapsedSeconds) of \(total) s with \(summary.waitedSeconds) s waiting")
            #expect(events.waits == ["0/1", "ready"], "a wait, then its end: \(events.waits)")
            #expect(status.document.state == .training && (status.document.window?.elapsedSeconds ?? .infinity) <= total - 2 + 0.05)
            let end = try String(contentsOfFile: "\(dir)/run/metrics.jsonl", encoding: .utf8).split(separator: "\n").last.map(String.init) ?? ""
            let record = try MetricsRecord.decoder().decode(MetricsRecord.self, from: Data(end.utf8))
            #expect(record.kind == .end && (record.waitedSeconds ?? 0) >= 2 && (record.elapsedSeconds ?? .infinity) <= total - 2 + 0.05)
            let checkpoint = try Checkpoint.newestValid("\(dir)/run").contents.state
            #expect(checkpoint.elapsedSeconds <= total - 2 + 0.05)
        }
    }
}

final class EventBox: @unchecked Sendable {
    let lock = NSLock()
    var waits: [String] = []
    var summary: TrainingSummary?
    func append(_ e: TrainingEvent) {
        lock.withLock {
            if case let .waiting(c, n) = e { waits.append("\(c)/\(n)") }
            if case .ready = e { waits.append("ready") }
        }
    }
}
