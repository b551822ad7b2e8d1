import Coordinator
import Monitoring
@testable import Training
import Foundation
import Testing
import TestSupport

@Suite("status table")
struct StatusTableTests {
    func document(step: Int?, state: String, speeds: [Double]) throws -> StatusDocument {
        let workers = speeds.enumerated().map { k, s in
            """
            {"id": "w\(k)", "rank": \(k), "host": "h", "pid": 1, "threads": 2, "state": "ready", "seconds_since_heard": 0.2,
             "steps_done": 10, "refused": 0, "joins": 1, "share": 32, "images_per_second": \(s), "bytes_up": 100, "bytes_down": 200}
            """
        }
        let stepField = step.map {
            "\"step\": \($0), \"window\": {\"step\": \($0), \"total_steps\": 100, \"epoch\": 1, \"loss\": 1.5, \"train_accuracy\": 0.5, \"lr\": 0.001, "
                + "\"grad_norm\": 1, \"images_per_second\": 300, \"elapsed_seconds\": 10, \"eta_seconds\": 60, \"bytes_up_per_step\": 0, \"bytes_down_per_step\": 0}, "
        } ?? ""
        let json = "{\"run_id\": \"ab\", \"state\": \"\(state)\", \(stepField)\"total_steps\": 100, \"workers\": [\(workers.joined(separator: ","))]}"
        return try StatusDocument.decode(Data(json.utf8))
    }

    /// Before the first step the table says it is waiting and who has joined, not "loss nan
    /// 0 img/s"; once training, a worker at under two thirds of the median speed is marked
    /// a straggler and the others are not.
    @Test func waitingAndStragglersAreSaid() throws {
        let waiting = StatusTable.render(try document(step: nil, state: "starting", speeds: [0]))
        #expect(waiting.contains("waiting for workers: 1 joined") && !waiting.contains("nan"), "\(waiting)")
        let even = StatusTable.render(try document(step: 5, state: "training", speeds: [100, 95, 110]))
        #expect(!even.contains("straggler") && even.contains("step 5/100"), "\(even)")
        let slow = try document(step: 5, state: "training", speeds: [100, 40, 110])
        let table = StatusTable.render(slow)
        let marked = table.split(separator: "\n").filter { $0.contains("straggler") }
        #expect(marked.count == 1 && marked[0].contains("w1") && marked[0].contains("0.40×"), "\(table)")
        #expect(StatusTable.stragglers(slow.workers!).keys.sorted() == ["w1"])
        #expect(StatusTable.stragglers(try document(step: 5, state: "training", speeds: [10]).workers!).isEmpty)
    }

    /// The header follows the rounds as they finish (the worker rows always did), between
    /// log windows too; before a step is done it waits, and before the first window it
    /// shows "–" for loss, lr and speed rather than nan and 0.
    @Test func theHeaderFollowsTheSteps() throws {
        let status = RunStatus(config: try tinyRunConfig(dataDir: "/nonexistent"), parameters: 1000)
        status.observe(.started(TrainingPlan(runDirectory: "r", startStep: 0, totalSteps: 40, stepsPerEpoch: 8,
                                             trainImages: 128, testImages: 32, parameters: 1000, threads: 2, engine: "matrix products: x")))
        #expect(StatusTable.render(status.document).contains("waiting for workers"))
        status.observe(.waiting(connected: 1, needed: 2))
        #expect(status.document.state == .waiting && status.document.stateText == "waiting for workers (1/2)")
        status.observe(.advanced(step: 1))
        #expect(status.document.state == .training && status.document.step == 1)
        status.recordStepDone(3)
        var header = StatusTable.render(status.document)
        #expect(header.contains("step 3/40  epoch 0.38  loss –  lr –  – img/s  ETA –") && !header.contains("nan"), "\(header)")
        status.recordStepDone(2)  // a late call never moves it back
        #expect(status.document.step == 3)
        status.observe(.step(StepReport(step: 4, totalSteps: 40, epoch: 0.5, loss: 1.25, trainAccuracy: 0.5, lr: 1e-3, gradNorm: 1,
                                        imagesPerSecond: 321, elapsedSeconds: 2, etaSeconds: 20)))
        status.recordStepDone(6)
        header = StatusTable.render(status.document)
        #expect(header.contains("step 6/40  epoch 0.75  loss 1.2500  lr 1.00e-03  321 img/s"), "\(header)")
    }
}

extension StatusTableTests {
    /// The worker table fits the terminal: at 80 columns every line does (host and bytes
    /// go first), at 120 they come back; a straggler's note keeps its own line.
    @Test func theTableFitsTheTerminal() throws {
        let doc = try document(step: 5, state: "training", speeds: [100, 40, 110])
        let narrow = StatusTable.render(doc, columns: 80)
        for line in narrow.split(separator: "\n") { #expect(line.count <= 79, "\(line.count): \(line)") }
        #expect(narrow.contains("rank") && narrow.contains("img/s") && !narrow.contains("host"), "\(narrow)")
        let wide = StatusTable.render(doc, columns: 120)
        #expect(wide.contains("host") && wide.contains("down") && wide.contains("200 B"), "\(wide)")
        #expect(wide.split(separator: "\n").contains { $0.contains("straggler") && $0.contains("w1") })
    }

    /// A run that no coordinator serves any more is told from its metrics: how it ended,
    /// the last evaluation, the training time apart from the wait, what to do next.
    @Test func aFinishedOrStoppedRunIsSummarisedFromItsMetrics() throws {
        var start = MetricsRecord(kind: .start, step: 0); start.run = "tiny"; start.totalSteps = 40
        var eval = MetricsRecord(kind: .eval, step: 40); eval.evalAccuracy = 0.8617; eval.evalLoss = 0.4445
        var end = MetricsRecord(kind: .end, step: 40); end.elapsedSeconds = 510; end.waitedSeconds = 72; end.time = 1_796_580_000
        let finished = try #require(RunHistory(records: [start, eval, end]))
        let text = finished.text(runDirectory: "runs/x")
        #expect(text.contains("runs/x: finished, 40 steps of 40") && text.contains("top-1 86.17%") && text.contains("8:30 training, 1:12 waiting")
                && text.contains("svite export runs/x"), "\(text)")
        var stopped = MetricsRecord(kind: .stopped, step: 17); stopped.elapsedSeconds = 60
        let s = try #require(RunHistory(records: [start, stopped]))
        #expect(s.ending == .stopped(reason: nil) && s.text(runDirectory: "r").contains("svite train --resume r"))
        let killed = try #require(RunHistory(records: [start, MetricsRecord(kind: .train, step: 20)]))
        #expect(killed.ending == .noEnding && killed.text(runDirectory: "r").contains("no end record"))
        #expect(RunHistory(records: []) == nil)
        #expect(finished.json["state"] as? String == "finished" && finished.json["waited_seconds"] as? Double == 72)
    }
}

@Suite("progress bar")
struct ProgressLineTests {
    /// The bar fits every terminal width in one line shorter than it (no wrap, no stale
    /// line), keeps the step count and, as long as there is room, the phase and the ETA.
    @Test func theBarFitsTheTerminal() {
        let r = StepReport(step: 1234, totalSteps: 4690, epoch: 2.63, loss: 0.8123, trainAccuracy: 0.7, lr: 6.4e-4, gradNorm: 1,
                           imagesPerSecond: 1344, elapsedSeconds: 171, etaSeconds: 437)
        for columns in [20, 40, 60, 80, 120, 200] {
            for phase in [nil, "evaluating 12/20"] {
                let text = ProgressLine.bar(r, epochs: 10, elapsed: 171, eta: 437, phase: phase, columns: columns)
                #expect(text.count <= max(20, columns - 1) && !text.contains("\n"), "\(columns): \(text)")
                #expect(columns < 40 || text.contains("1234/4690"), "\(columns): \(text)")
                if columns >= 80 { #expect(text.contains("ETA 7:17") && (phase == nil || text.contains(phase!)), "\(columns): \(text)") }
            }
        }
        let wide = ProgressLine.bar(r, epochs: 10, elapsed: 171, eta: 437, phase: nil, columns: 200)
        #expect(wide.hasPrefix("epoch 3/10 ") && wide.contains("loss 0.8123") && wide.contains("lr 6.40e-04") && wide.contains("1344 img/s"), "\(wide)")
        // The bar's 24 cells are about 26% full.
        #expect(wide.filter { $0 == "█" }.count == 6 && wide.filter { $0 == "░" }.count == 18, "\(wide)")
    }
}

extension StatusTableTests {
    /// A stuck (benched) worker and a late one are shown as such, with what they missed
    /// and when they last answered in time; a stuck worker is not counted among the
    /// stragglers (it has no share to hold the step back with).
    @Test func lateAndStuckWorkersAreSaid() throws {
        var d = try document(step: 5, state: "training", speeds: [100, 100, 30])
        d.workers![1].state = .late; d.workers![1].missedSteps = 1; d.workers![1].missedImages = 32; d.workers![1].secondsSinceAnswer = 2.5
        d.workers![2].state = .stuck; d.workers![2].missedSteps = 3; d.workers![2].missedImages = 96
        let table = StatusTable.render(d)
        #expect(table.contains("w1: missed 1 step deadline(s) (32 images left out); last answer in time 2.5 s ago"), "\(table)")
        #expect(table.contains("w2: missed 3 step deadline(s) (96 images left out); no answer in time yet; benched"), "\(table)")
        #expect(StatusTable.stragglers(d.workers!).isEmpty)
        let text = PrometheusText.render(d)
        #expect(text.contains("svite_workers{state=\"stuck\"} 1") && text.contains("svite_worker_missed_steps_total{"), "\(text.prefix(400))")
    }
}
