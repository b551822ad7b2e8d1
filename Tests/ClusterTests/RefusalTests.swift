import Config
import Core
import Foundation
import Testing
import TestSupport
@testable import Training

/// What a refused or stuck process does, as a user meets it: the svite binary, run by
/// hand, against a coordinator that refuses it or a worker that hangs.
extension ClusterTests {
    /// Reads a pipe to its end on a thread of its own (a full pipe would block the child).
    final class Collected: @unchecked Sendable {
        private let lock = NSLock()
        private var data = Data()
        private var thread: Thread?
        init(_ pipe: Pipe) {
            let t = Thread { [self] in
                while true {
                    let chunk = pipe.fileHandleForReading.availableData
                    if chunk.isEmpty { return }
                    lock.withLock { data.append(chunk) }
                }
            }
            thread = t
            t.start()
        }
        var text: String { lock.withLock { String(decoding: data, as: UTF8.self) } }
    }

    func waitForExit(_ p: Process, seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while p.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        return !p.isRunning
    }

    func trainRecords(_ run: String) -> [MetricsRecord] {
        MetricsLog.read("\(run)/metrics.jsonl").filter { $0.kind == .train }
    }

    /// A second `svite train` or `svite coordinator` on a run that a coordinator holds is
    /// refused before it touches anything: the run's status.endpoint and its workers' logs
    /// stay as they were (before: it removed the one and truncated the others, and was
    /// refused only after loading the data).
    @Test func aSecondTrainerOfARunningRunTouchesNothing() throws {
        let exe = try sviteBinary()
        try withTemporaryDirectory { dir in
            try writeSyntheticIDX(dir: dir, train: 64, test: 16)
            let config = try tinyRunConfig(dataDir: dir, extra: ["training.epochs=0", "training.max_steps=1000000"])
            try config.yaml.write(toFile: "\(dir)/tiny.yaml", atomically: true, encoding: .utf8)
            let run = "\(dir)/run"
            let first = try startSvite(exe, ["coordinator", "--plain", "--config", "\(dir)/tiny.yaml", "--out", run, "--workers", "1",
                                             "--bind", "tcp://127.0.0.1:\(try freePort())", "--status", "tcp://127.0.0.1:*", "--log-level", "warning"])
            defer { if first.isRunning { first.terminate(); first.waitUntilExit() } }
            let statusFile = "\(run)/status.endpoint"
            let deadline = Date().addingTimeInterval(60)
            while !FileManager.default.fileExists(atPath: statusFile) && Date() < deadline && first.isRunning { Thread.sleep(forTimeInterval: 0.05) }
            let endpoint = try String(contentsOfFile: statusFile, encoding: .utf8)
            try "a worker's log\n".write(toFile: "\(run)/worker-0.log", atomically: true, encoding: .utf8)
            for args in [["train", "--workers", "1"], ["coordinator", "--workers", "1", "--bind", "tcp://127.0.0.1:\(try freePort())"]] {
                let out = Pipe()
                let second = try startSvite(exe, args + ["--plain", "--config", "\(dir)/tiny.yaml", "--out", run, "--status", "tcp://127.0.0.1:*"], output: out)
                let said = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                second.waitUntilExit()
                #expect(second.terminationStatus == 1 && said.contains("another svite process (pid \(first.processIdentifier))"), "\(args[0]): \(said)")
                #expect(try String(contentsOfFile: statusFile, encoding: .utf8) == endpoint, "\(args[0]) changed status.endpoint")
                #expect(try String(contentsOfFile: "\(run)/worker-0.log", encoding: .utf8) == "a worker's log\n", "\(args[0]) touched worker-0.log")
            }
            #expect(first.isRunning)
        }
    }

    /// A worker whose compute hangs (its socket thread still heartbeats) is the only one
    /// of the run: SIGTERM to the coordinator gives the stuck step up and ends the run
    /// with a checkpoint of the steps made (before: "stopping after this step" forever;
    /// a second signal lost the work since the last checkpoint).
    @Test func sigtermDuringAStuckStepCheckpoints() throws {
        let exe = try sviteBinary()
        try withTemporaryDirectory { dir in
            try writeSyntheticIDX(dir: dir, train: 64, test: 16)
            let config = try tinyRunConfig(dataDir: dir, extra: ["training.epochs=0", "training.max_steps=1000", "training.checkpoint_every_steps=1000",
                                                                 "communication.step_deadline_floor_seconds=1"])
            try config.yaml.write(toFile: "\(dir)/tiny.yaml", atomically: true, encoding: .utf8)
            let run = "\(dir)/run", port = try freePort()
            let coordinator = try startSvite(exe, ["coordinator", "--plain", "--config", "\(dir)/tiny.yaml", "--out", run, "--workers", "1",
                                                   "--bind", "tcp://127.0.0.1:\(port)", "--status", "none", "--log-level", "warning"])
            let worker = try startSvite(exe, ["worker", "--coordinator", "tcp://127.0.0.1:\(port)", "--name", "stuck", "--threads", "1"],
                                        environment: ["SVITE_TEST_COMPUTE_DELAY": "1000@3"])
            defer {
                for p in [coordinator, worker] where p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() }
            }
            // Stuck: a step has been repeated without its images.
            let deadline = Date().addingTimeInterval(90)
            while trainRecords(run).count < 3 && Date() < deadline && coordinator.isRunning { Thread.sleep(forTimeInterval: 0.1) }
            Thread.sleep(forTimeInterval: 3)
            #expect(trainRecords(run).count == 3, "the worker answers steps 1-3, then hangs")
            let signalled = Date()
            coordinator.terminate()
            let exited = waitForExit(coordinator, seconds: 30)
            let seconds = Date().timeIntervalSince(signalled)
            #expect(exited && coordinator.terminationStatus == 75, "\(exited ? "exit \(coordinator.terminationStatus)" : "still running") after \(seconds) s")
            #expect(Checkpoint.list(in: "\(run)/checkpoints").map(\.step) == [3], "\(Checkpoint.list(in: "\(run)/checkpoints"))")
            let stopped = MetricsLog.read("\(run)/metrics.jsonl").last
            #expect(stopped?.kind == .stopped && stopped?.step == 3)
        }
    }

    /// Kill a coordinator and start one of another model on its port: its old worker is
    /// refused with the reason and exits 75 so a supervisor starts it afresh (before: both
    /// sides waited for each other without end, the coordinator counting bad frames).
    @Test func aWorkerOfAnotherModelIsRefusedAndExits() throws {
        let exe = try sviteBinary()
        try withTemporaryDirectory { dir in
            try writeSyntheticIDX(dir: dir, train: 64, test: 16)
            let config = try tinyRunConfig(dataDir: dir, extra: ["training.epochs=0", "training.max_steps=1000000"])
            try config.yaml.write(toFile: "\(dir)/tiny.yaml", atomically: true, encoding: .utf8)
            let port = try freePort()
            func coordinator(_ run: String, _ extra: [String]) throws -> (Process, Collected) {
                let out = Pipe()
                let p = try startSvite(exe, ["coordinator", "--plain", "--config", "\(dir)/tiny.yaml", "--out", run, "--workers", "1",
                                             "--bind", "tcp://127.0.0.1:\(port)", "--status", "none", "--log-level", "warning"] + extra, output: out)
                return (p, Collected(out))
            }
            let (old, _) = try coordinator("\(dir)/old", [])
            let workerOut = Pipe()
            let worker = try startSvite(exe, ["worker", "--coordinator", "tcp://127.0.0.1:\(port)", "--name", "w", "--threads", "1",
                                              "--log-level", "warning"], output: workerOut)
            let said = Collected(workerOut)
            var new: Process?
            defer { for p in [old, worker] + (new.map { [$0] } ?? []) where p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() } }
            let deadline = Date().addingTimeInterval(90)
            while trainRecords("\(dir)/old").count < 2 && Date() < deadline && old.isRunning { Thread.sleep(forTimeInterval: 0.1) }
            kill(old.processIdentifier, SIGKILL)
            old.waitUntilExit()
            let (started, newSaid) = try coordinator("\(dir)/new", ["--set", "model.dim=24"])
            new = started
            let exited = waitForExit(worker, seconds: 30)
            #expect(exited && worker.terminationStatus == 75, "worker: \(worker.isRunning ? "running" : "exit \(worker.terminationStatus)")")
            #expect(said.text.contains("now trains another model") && said.text.contains("Start the worker again"), "\(said.text.suffix(800))")
            started.terminate()
            started.waitUntilExit()
            #expect(newSaid.text.contains("trains another model"), "\(newSaid.text.suffix(800))")
        }
    }
}
