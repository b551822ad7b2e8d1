import Config
import Foundation
import Model
import Testing
import TestSupport
@testable import Training
#if canImport(Glibc)
import Glibc
#endif

/// Faults injected into a real cluster of svite processes on 127.0.0.1, as Horovod
/// Elastic's and TF's parameter-server tests inject them: at given steps, by signals.
extension ClusterTests {
    /// A free TCP port on 127.0.0.1 (bound and released; the coordinator binds it next).
    func freeLoopbackPort() throws -> Int { Int(try freePort()) }

    /// The last step the run's metrics log reports (0 before the first).
    func stepReached(_ run: String) -> Int {
        MetricsLog.read("\(run)/metrics.jsonl").filter { $0.kind == .train }.map(\.step).max() ?? 0
    }

    func waitFor(_ what: String, seconds: Double, _ condition: () -> Bool) {
        let deadline = Date().addingTimeInterval(seconds)
        while !condition() && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        if !condition() { Issue.record("timed out after \(seconds) s waiting for \(what)") }
    }

    func finish(_ p: Process, within seconds: Double, _ what: String) {
        waitFor("\(what) to exit", seconds: seconds) { !p.isRunning }
        if p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() }
    }

    /// Every tensor of two checkpoints (weights, AdamW moments, masks and ever-active
    /// bits) compared bit for bit; returns the names that differ.
    func differingTensors(_ a: String, _ b: String) throws -> [String] {
        let x = try Checkpoint.read(a).file, y = try Checkpoint.read(b).file
        #expect(Set(x.entries.keys) == Set(y.entries.keys))
        return try x.entries.keys.sorted().filter { name in
            try x.floats(name).map(\.bitPattern) != y.floats(name).map(\.bitPattern)
        }
    }

    /// The coordinator is SIGKILLed at a random step, started again with --auto-resume on
    /// the same endpoint, and its three workers (never restarted) come back by themselves:
    /// the final weights, moments and masks are bit-identical to those of an uninterrupted
    /// run with the same workers, and the run took every step exactly once after the
    /// checkpoint it resumed from.
    @Test func coordinatorKilledAndAutoResumedRepeatsTheRunBitForBit() throws {
        let exe = try sviteBinary()
        try withTemporaryDirectory { dir in
            try writeSyntheticIDX(dir: dir, train: 512, test: 32)
            let steps = 24
            let config = try tinyRunConfig(dataDir: dir, extra: [
                "training.epochs=0", "training.max_steps=\(steps)", "training.batch_size=33", "training.checkpoint_every_steps=3",
                "training.keep_checkpoints=20", "sparsity.method=svite", "sparsity.sparsity=0.5", "sparsity.update_interval=4",
            ] + noStepDeadlines)
            try config.yaml.write(toFile: "\(dir)/tiny.yaml", atomically: true, encoding: .utf8)

            func coordinator(_ run: String, port: Int) throws -> Process {
                try startSvite(exe, ["coordinator", "--plain", "--config", "\(dir)/tiny.yaml", "--out", run, "--auto-resume",
                                     "--bind", "tcp://127.0.0.1:\(port)", "--status", "none", "--workers", "3",
                                     "--balance", "equal", "--worker-timeout", "20", "--log-level", "warning"])
            }
            // Started a moment apart, in another order for each run: which worker joins
            // (and answers) first must not change the run.
            func workers(port: Int, _ names: [String]) throws -> [Process] {
                try names.map {
                    Thread.sleep(forTimeInterval: 0.3)
                    return try startSvite(exe, ["worker", "--coordinator", "tcp://127.0.0.1:\(port)", "--name", $0, "--threads", "1", "--log-level", "warning"])
                }
            }

            // The uninterrupted run.
            let refPort = try freeLoopbackPort()
            let ref = try coordinator("\(dir)/ref", port: refPort)
            let refWorkers = try workers(port: refPort, ["a", "b", "c"])
            finish(ref, within: 240, "the uninterrupted coordinator")
            #expect(ref.terminationStatus == 0)
            refWorkers.forEach { finish($0, within: 20, "a worker of the uninterrupted run") }

            // The same run, its coordinator killed once between two checkpoints.
            let port = try freeLoopbackPort()
            var c = try coordinator("\(dir)/faulted", port: port)
            let ws = try workers(port: port, ["c", "b", "a"])
            var rng = SystemRandomNumberGenerator()
            let killAfter = Int.random(in: 4 ... 16, using: &rng)
            waitFor("step \(killAfter)", seconds: 180) { stepReached("\(dir)/faulted") >= killAfter || !c.isRunning }
            Thread.sleep(forTimeInterval: Double.random(in: 0 ... 0.3, using: &rng))
            let killedAt = stepReached("\(dir)/faulted")
            kill(c.processIdentifier, SIGKILL)
            c.waitUntilExit()
            let resumeFrom = try Checkpoint.newestValid("\(dir)/faulted").contents.state.step
            #expect(resumeFrom < steps, "killed after step \(killedAt), the newest checkpoint is at \(resumeFrom)")
            c = try coordinator("\(dir)/faulted", port: port)
            finish(c, within: 240, "the resumed coordinator")
            #expect(c.terminationStatus == 0)
            ws.forEach { finish($0, within: 20, "a worker of the faulted run") }
            for w in ws + refWorkers { #expect(w.terminationStatus == 0, "a worker exited with \(w.terminationStatus)") }

            let refFinal = try Checkpoint.locate("\(dir)/ref"), faultedFinal = try Checkpoint.locate("\(dir)/faulted")
            #expect(try Checkpoint.read(refFinal).state.step == steps && Checkpoint.read(faultedFinal).state.step == steps)
            #expect(try Checkpoint.read(faultedFinal).state.optimizerUpdates == steps)
            let differ = try differingTensors(refFinal, faultedFinal)
            #expect(differ.isEmpty, "killed after step \(killedAt), resumed from \(resumeFrom): \(differ.count) tensors differ, e.g. \(differ.prefix(4))")
            // The resumed coordinator's log takes over at the checkpoint: each later step once.
            let after = MetricsLog.read("\(dir)/faulted/metrics.jsonl").filter { $0.kind == .train && $0.step > resumeFrom }.map(\.step)
            #expect(after == Array(resumeFrom + 1 ... steps), "steps logged after the checkpoint at \(resumeFrom): \(after)")
        }
    }

    /// An exit schedule (Horovod Elastic's style): with three workers, one is SIGKILLed at
    /// one step, another SIGSTOPped at a later one and SIGCONTed once it was dropped, and
    /// a new worker joins then; once all three take part again the coordinator gets SIGTERM.
    /// Every step is applied exactly once (steps 1…N logged once each, as many optimizer
    /// updates as steps, the checkpoint at N), the stopped worker comes back, and the
    /// killed one is the only one that does not finish. The schedule follows the run's own
    /// log, not a step count, so a slow machine only makes it take longer.
    @Test func exitScheduleKillsAndStopsWorkersAndTheRunFinishes() throws {
        let exe = try sviteBinary()
        try withTemporaryDirectory { dir in
            try writeSyntheticIDX(dir: dir, train: 512, test: 32)
            let config = try tinyRunConfig(dataDir: dir, extra: [
                "training.epochs=0", "training.max_steps=100000", "training.batch_size=48", "training.checkpoint_every_steps=10",
            ])
            try config.yaml.write(toFile: "\(dir)/tiny.yaml", atomically: true, encoding: .utf8)
            let port = try freeLoopbackPort()
            let run = "\(dir)/run"
            let coordinator = try startSvite(exe, ["coordinator", "--plain", "--config", "\(dir)/tiny.yaml", "--out", run,
                                                   "--bind", "tcp://127.0.0.1:\(port)", "--status", "none", "--workers", "3",
                                                   "--worker-timeout", "1.5", "--log-level", "warning"])
            func worker(_ name: String) throws -> Process {
                try startSvite(exe, ["worker", "--coordinator", "tcp://127.0.0.1:\(port)", "--name", name, "--threads", "1", "--log-level", "warning"])
            }
            // How many workers took part in each logged step.
            func taking() -> [Int] {
                MetricsLog.read("\(run)/metrics.jsonl").filter { $0.kind == .train }.map { $0.imagesPerWorker?.filter { $0 > 0 }.count ?? 0 }
            }
            var ws = try ["a", "b", "c"].map(worker)

            // The schedule: at step 6 kill a; at step 12 stop b; once steps run with c
            // alone, continue b and start d; once three take part again, stop the run.
            waitFor("step 6", seconds: 120) { stepReached(run) >= 6 || !coordinator.isRunning }
            kill(ws[0].processIdentifier, SIGKILL)
            waitFor("step 12", seconds: 120) { stepReached(run) >= 12 || !coordinator.isRunning }
            kill(ws[1].processIdentifier, SIGSTOP)
            let stoppedAt = stepReached(run)
            waitFor("two steps with c alone", seconds: 60) {
                taking().dropFirst(stoppedAt).filter { $0 == 1 }.count >= 2 || !coordinator.isRunning
            }
            kill(ws[1].processIdentifier, SIGCONT)
            ws.append(try worker("d"))
            waitFor("b and d to take part", seconds: 120) {
                let after = taking().dropFirst(stoppedAt)
                guard let alone = after.firstIndex(of: 1) else { return !coordinator.isRunning }
                return after[alone...].filter { $0 == 3 }.count >= 3 || !coordinator.isRunning
            }
            kill(coordinator.processIdentifier, SIGTERM)

            finish(coordinator, within: 60, "the coordinator")
            // Stopped before the end: 75 (EX_TEMPFAIL), so a supervisor starts it again.
            #expect(coordinator.terminationStatus == 75)
            for w in ws.dropFirst() { finish(w, within: 20, "a worker") }
            #expect(ws[0].terminationReason == .uncaughtSignal)
            // Stopped before its end (to be resumed), the coordinator leaves its workers with
            // 75 (EX_TEMPFAIL), which a supervisor answers by starting them again.
            for w in ws.dropFirst() { #expect(w.terminationStatus == 75 && w.terminationReason == .exit) }

            let records = MetricsLog.read("\(run)/metrics.jsonl").filter { $0.kind == .train }
            let final = try Checkpoint.read(Checkpoint.locate(run)).state
            #expect(final.step > stoppedAt)
            #expect(records.map(\.step) == Array(1 ... final.step), "steps logged: \(records.map(\.step)), checkpoint at \(final.step)")
            #expect(final.optimizerUpdates == final.step)
            // Who took part: all three at first, two after the kill, one while b was
            // stopped, and three again with b back and d new.
            let counts = records.map { $0.imagesPerWorker?.filter { $0 > 0 }.count ?? 0 }
            #expect(counts.prefix(5).allSatisfy { $0 == 3 }, "\(counts)")
            #expect(counts.contains(2), "no step ran with two workers: \(counts)")
            #expect(counts.contains(1), "no step ran with the one worker left: \(counts)")
            #expect(counts.last == 3, "b and d did not take part at the end: \(counts)")
            #expect(records.allSatisfy { ($0.imagesPerWorker ?? []).reduce(0, +) > 0 })
        }
    }

    /// The resident memory of a process in MB (VmRSS), nil once it is gone.
    func residentMegabytes(_ pid: Int32) -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kb = Double(line.split(separator: " ").dropFirst().first ?? "") else { return nil }
        return kb / 1024
    }

    /// A soak: a coordinator evaluating every epoch while its workers churn (SIGKILLed,
    /// SIGTERMed, SIGSTOPped and continued, and new ones joining under new names), its
    /// memory sampled throughout. It must not grow once the first evaluation has sized the
    /// workspaces: every dropped worker's state is released. SVITE_SOAK_SECONDS makes it
    /// longer (default 20 s) and SVITE_SOAK_BINARY runs another build (a release one).
    @Test func soakWithChurningWorkersKeepsTheCoordinatorsMemoryFlat() throws {
        let exe = try sviteBinary(environment: "SVITE_SOAK_BINARY")
        let seconds = Double(ProcessInfo.processInfo.environment["SVITE_SOAK_SECONDS"] ?? "") ?? 20
        try withTemporaryDirectory { dir in
            try writeSyntheticIDX(dir: dir, train: 480, test: 500)
            let config = try tinyRunConfig(dataDir: dir, extra: [
                "training.epochs=0", "training.max_steps=10000000", "training.batch_size=48", "training.checkpoint_every_steps=50",
                "training.eval_every_epochs=1", "training.eval_batch_size=500",
            ])
            try config.yaml.write(toFile: "\(dir)/tiny.yaml", atomically: true, encoding: .utf8)
            let port = try freeLoopbackPort()
            let run = "\(dir)/run"
            let coordinator = try startSvite(exe, ["coordinator", "--plain", "--config", "\(dir)/tiny.yaml", "--out", run,
                                                   "--bind", "tcp://127.0.0.1:\(port)", "--status", "none", "--workers", "2",
                                                   "--worker-timeout", "1", "--log-level", "warning"])
            var started = 0
            func worker() throws -> Process {
                started += 1
                return try startSvite(exe, ["worker", "--coordinator", "tcp://127.0.0.1:\(port)", "--name", "w\(started)",
                                            "--threads", "1", "--log-level", "warning"])
            }
            var live = try [worker(), worker()]
            var gone: [Process] = []
            waitFor("the first evaluation", seconds: 120) {
                MetricsLog.read("\(run)/metrics.jsonl").contains { $0.kind == .eval } || !coordinator.isRunning
            }
            var samples: [(t: Double, mb: Double)] = []
            let clock = Date()
            var rng = SystemRandomNumberGenerator()
            var nextChurn = 1.0, fault = 0
            while Date().timeIntervalSince(clock) < seconds && coordinator.isRunning {
                let t = Date().timeIntervalSince(clock)
                if let mb = residentMegabytes(coordinator.processIdentifier) { samples.append((t, mb)) }
                if t >= nextChurn {
                    // One fault in turn to a random live worker, and a new worker in its place.
                    let victim = live.remove(at: Int.random(in: 0 ..< live.count, using: &rng))
                    switch fault % 3 {
                    case 0: kill(victim.processIdentifier, SIGKILL); gone.append(victim)
                    case 1: kill(victim.processIdentifier, SIGTERM); gone.append(victim)
                    default:
                        kill(victim.processIdentifier, SIGSTOP)
                        Thread.sleep(forTimeInterval: 1.5)
                        kill(victim.processIdentifier, SIGCONT)
                        live.append(victim)
                    }
                    fault += 1
                    if live.count < 3 { live.append(try worker()) }
                    nextChurn = t + Double.random(in: 0.8 ... 2.0, using: &rng)
                }
                Thread.sleep(forTimeInterval: 0.1)
            }
            let steps = stepReached(run)
            kill(coordinator.processIdentifier, SIGTERM)
            finish(coordinator, within: 60, "the coordinator")
            #expect(coordinator.terminationStatus == 75)
            // A worker started just before the stop may not have been welcomed, and keeps
            // trying to join (as it should, for a coordinator that restarts): SIGTERM ends it.
            let deadline = Date().addingTimeInterval(5)
            while (live + gone).contains(where: \.isRunning) && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
            for w in live + gone where w.isRunning { kill(w.processIdentifier, SIGTERM) }
            for w in live + gone { finish(w, within: 20, "a worker") }

            let records = MetricsLog.read("\(run)/metrics.jsonl").filter { $0.kind == .train }
            let final = try Checkpoint.read(Checkpoint.locate(run)).state
            #expect(records.map(\.step) == Array(1 ... final.step) && final.optimizerUpdates == final.step)
            // Memory: the largest sample of the last third against the largest of the first.
            try #require(samples.count >= 30, "only \(samples.count) memory samples")
            let third = samples.count / 3
            let early = samples.prefix(third).map(\.mb).max()!, late = samples.suffix(third).map(\.mb).max()!
            let evals = MetricsLog.read("\(run)/metrics.jsonl").filter { $0.kind == .eval }.count
            print("soak: \(Int(seconds)) s, \(steps) steps, \(evals) evaluations, \(started) workers started, \(fault) faults; "
                  + "coordinator RSS \(Int(samples.first!.mb)) MB at the first evaluation, max \(Int(early)) MB in the first third, "
                  + "\(Int(late)) MB in the last, \(Int(samples.last!.mb)) MB at the end; by tenths: "
                  + (1 ... 10).map { k in String(Int(samples[min(samples.count - 1, k * samples.count / 10)].mb)) }.joined(separator: " "))
            #expect(late <= early * 1.1 + 8, "the coordinator grew from \(early) MB to \(late) MB over \(steps) steps")
            #expect(evals >= 2 && fault >= 5, "\(evals) evaluations, \(fault) faults")
        }
    }

    /// The disk fills while a checkpoint is written (a tmpfs of a few checkpoints' size, in a
    /// mount namespace of its own): the run stops with an error that says so, the earlier
    /// checkpoints read back whole, and once there is room again `--auto-resume` finishes
    /// the run bit for bit as the run that never ran short, each step logged once.
    @Test func aDiskFullDuringACheckpointLosesNothing() throws {
        let exe = try sviteBinary()
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare") else { return }
        try withTemporaryDirectory { dir in
            try writeSyntheticIDX(dir: dir, train: 128, test: 32)
            let steps = 8
            let config = try tinyRunConfig(dataDir: dir, extra: [
                "training.epochs=0", "training.max_steps=\(steps)", "training.checkpoint_every_steps=1", "training.keep_checkpoints=3",
                "training.threads=1",
            ])
            try config.yaml.write(toFile: "\(dir)/tiny.yaml", atomically: true, encoding: .utf8)
            let ref = try startSvite(exe, ["train", "--workers", "0", "--config", "\(dir)/tiny.yaml", "--out", "\(dir)/ref", "--plain"])
            finish(ref, within: 120, "the run with room")
            #expect(ref.terminationStatus == 0)
            let refFinal = try Checkpoint.locate("\(dir)/ref")
            let checkpointBytes = try FileManager.default.attributesOfItem(atPath: refFinal)[.size] as! Int
            // Room for two checkpoints and a half: the third write runs out.
            let kilobytes = (checkpointBytes * 5 / 2) / 1024 + 24
            let mnt = "\(dir)/small"
            try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
            let script = """
            mount -t tmpfs -o size=\(kilobytes)k tmpfs \(mnt) || { echo unavailable > \(dir)/rc1; exit 0; }
            \(exe) train --workers 0 --config \(dir)/tiny.yaml --out \(mnt)/run --plain > \(dir)/full.log 2>&1; echo $? > \(dir)/rc1
            cp -a \(mnt)/run \(dir)/after-full
            mount -o remount,size=65536k \(mnt)
            \(exe) train --workers 0 --config \(dir)/tiny.yaml --out \(mnt)/run --auto-resume --plain > \(dir)/resume.log 2>&1; echo $? > \(dir)/rc2
            cp -a \(mnt)/run \(dir)/resumed
            """
            let sh = try startSvite("/usr/bin/unshare", ["-m", "--propagation", "private", "sh", "-c", script])
            finish(sh, within: 240, "the runs on the small disk")
            let rc1 = (try? String(contentsOfFile: "\(dir)/rc1", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
            if rc1 == "unavailable" { print("aDiskFullDuringACheckpointLosesNothing: cannot mount a tmpfs here; not run"); return }
            let full = (try? String(contentsOfFile: "\(dir)/full.log", encoding: .utf8)) ?? ""
            #expect(rc1 == "1", "the run on the full disk exited \(rc1 ?? "?"): \(full.suffix(600))")
            #expect(full.contains("No space left on device") && full.contains("The disk is full") && full.contains("svite train --resume"),
                    "\(full.suffix(600))")
            let left = Checkpoint.list(in: "\(dir)/after-full/checkpoints")
            #expect(!left.isEmpty && left.count < steps, "checkpoints left: \(left.map(\.1))")
            for (_, path) in left { #expect(throws: Never.self) { _ = try Checkpoint.read(path) } }

            let rc2 = (try? String(contentsOfFile: "\(dir)/rc2", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
            let resumeLog = (try? String(contentsOfFile: "\(dir)/resume.log", encoding: .utf8)) ?? ""
            #expect(rc2 == "0", "the resumed run exited \(rc2 ?? "?"): \(resumeLog.suffix(600))")
            let final = try Checkpoint.locate("\(dir)/resumed")
            #expect(try Checkpoint.read(final).state.step == steps)
            let differ = try differingTensors(refFinal, final)
            #expect(differ.isEmpty, "\(differ.count) tensors differ, e.g. \(differ.prefix(4))")
            let logged = MetricsLog.read("\(dir)/resumed/metrics.jsonl").filter { $0.kind == .train }.map(\.step)
            #expect(logged == Array(1 ... steps), "steps logged: \(logged)")
        }
    }
}
