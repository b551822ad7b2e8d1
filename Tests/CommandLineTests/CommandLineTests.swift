import Foundation
import Config
import Core
import Testing
import TestSupport
@testable import Training
#if canImport(Glibc)
import Glibc
#endif

/// What a user sees from the command line when something is off: a word that says what to
/// do, at once or within seconds, never silence or a libzmq errno.
@Suite("command line", .serialized)
struct CommandLineTests {
    func svite(_ exe: String, _ args: [String], environment: [String: String] = [:], seconds: Double = 60) throws -> (status: Int32, out: String, err: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = args
        p.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        // SIGTERM: a test runner may leave SIGINT ignored in the processes it starts.
        let killer = DispatchWorkItem { if p.isRunning { kill(p.processIdentifier, SIGTERM) } }
        DispatchQueue.global().asyncAfter(deadline: .now() + seconds, execute: killer)
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        killer.cancel()
        return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }

    @Test func unknownCommandsGetASuggestion() throws {
        let exe = try sviteBinary()
        let r = try svite(exe, ["trian", "--config", "x"])
        #expect(r.status == 64 && r.err.contains("'trian' is not a svite command; did you mean 'train'?") && r.err.contains("Commands: train,"), "\(r)")
        let far = try svite(exe, ["frobnicate"])
        #expect(far.status == 64 && !far.err.contains("did you mean") && far.err.contains("Commands:"), "\(far)")
        #expect(try svite(exe, ["help", "train"]).status == 0)
    }

    /// `svite config` prints what a run would store (overrides applied, defaults written
    /// out), which reads back as the same config; a bad key is named, with the config status.
    @Test func configPrintsTheResolvedConfig() throws {
        let exe = try sviteBinary()
        let r = try svite(exe, ["config", "--config", "fmnist-6head", "--set", "training.epochs=3"])
        #expect(r.status == 0, "\(r)")
        let back = try RunConfig.parse(yaml: r.out, file: "printed.yaml")
        #expect(back.yaml == (try RunConfig.resolve("fmnist-6head", overrides: ["training.epochs=3"])).yaml && back.training.epochs == 3)
        #expect(r.out.contains("gradient_density: auto"))
        let bad = try svite(exe, ["config", "--set", "training.epoch=3"])
        #expect(bad.status == 78 && bad.err.contains("training.epoch"), "\(bad)")
    }

    /// `HOST:PORT` is taken as tcp://HOST:PORT; what is not an endpoint says the right form
    /// (libzmq would say only "Invalid argument").
    @Test func endpointsAreCheckedWithTheRightForm() throws {
        let exe = try sviteBinary()
        for (args, form) in [(["worker", "--coordinator", "head-node"], "tcp://HOST:PORT"),
                             (["worker", "--coordinator", "tcp://*:5555"], "name the coordinator's host"),
                             (["worker", "--coordinator", "udp://head:5555"], "svite speaks tcp://"),
                             (["coordinator", "--bind", "5555"], "tcp://ADDRESS:PORT"),
                             (["status", "--connect", "head:99999"], "the port must be 1 to 65535")] {
            let r = try svite(exe, args)
            #expect(r.status == 64 && r.err.contains(form), "\(args): \(r.err)")
        }
    }

    /// A worker with nothing at its endpoint says so within 10 s, naming the endpoint and
    /// what to check.
    @Test func aWorkerThatHearsNothingSaysSo() throws {
        let exe = try sviteBinary()
        let port = try freePort()
        let r = try svite(exe, ["worker", "--coordinator", "127.0.0.1:\(port)", "--threads", "1"], seconds: 7)
        #expect(r.err.contains("no coordinator answers at tcp://127.0.0.1:\(port) after 5 s") && r.err.contains("--bind tcp://*:PORT"), "\(r.err)")
    }

    /// A busy --metrics port stops the coordinator at once, before it makes the run directory.
    @Test func aBusyMetricsPortSaysAddressInUse() throws {
        let exe = try sviteBinary()
        try withTemporaryDirectory { dir in
            let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(listener) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            #expect(withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } == 0)
            #expect(listen(listener, 1) == 0)
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) } }
            let port = UInt16(bigEndian: address.sin_port)
            let start = Date()
            let r = try svite(exe, ["coordinator", "--out", "\(dir)/run", "--metrics", "127.0.0.1:\(port)",
                                    "--bind", "tcp://127.0.0.1:\(try freePort())", "--status", "none"], seconds: 30)
            #expect(r.status == 1 && r.err.contains("address in use"), "\(r.err)")
            #expect(Date().timeIntervalSince(start) < 4 && !FileManager.default.fileExists(atPath: "\(dir)/run"))
        }
    }

    /// `svite status RUN_DIR` on a run whose coordinator is gone summarises its metrics;
    /// `--watch` into a pipe prints plain, flushed snapshots (no screen-clearing codes).
    @Test func statusOfAFinishedRunAndWatchIntoAPipe() throws {
        let exe = try sviteBinary()
        try withTemporaryDirectory { dir in
            try FileManager.default.createDirectory(atPath: "\(dir)/run", withIntermediateDirectories: true)
            let lines = [#"{"kind":"start","step":0,"run":"tiny","total_steps":12}"#,
                         #"{"kind":"eval","step":12,"eval_accuracy":0.5,"eval_loss":1.2}"#,
                         #"{"kind":"end","step":12,"elapsed_seconds":9.5}"#]
            try (lines.joined(separator: "\n") + "\n").write(toFile: "\(dir)/run/metrics.jsonl", atomically: true, encoding: .utf8)
            let r = try svite(exe, ["status", "\(dir)/run"])
            #expect(r.status == 0 && r.out.contains("finished, 12 steps of 12") && r.out.contains("top-1 50.00%"), "\(r)")
            let j = try svite(exe, ["status", "\(dir)/run", "--json"])
            #expect(j.status == 0 && j.out.contains(#""state":"finished""#), "\(j)")
            // A status file left by a killed coordinator: a word on stderr, the JSON alone on stdout.
            try "tcp://127.0.0.1:\(try freePort())\n".write(toFile: "\(dir)/run/status.endpoint", atomically: true, encoding: .utf8)
            let stale = try svite(exe, ["status", "\(dir)/run", "--json", "--timeout", "0.3"])
            #expect(stale.status == 0 && (try? JSONSerialization.jsonObject(with: Data(stale.out.utf8))) != nil && stale.err.contains("does not answer"), "\(stale)")
            // A live coordinator waiting for its workers, watched through a pipe.
            let port = try freePort(), statusPort = try freePort()
            let coordinator = try startSvite(exe, ["coordinator", "--plain", "--out", "\(dir)/live", "--workers", "1",
                                                   "--bind", "tcp://127.0.0.1:\(port)", "--status", "tcp://127.0.0.1:\(statusPort)"])
            defer { kill(coordinator.processIdentifier, SIGKILL); coordinator.waitUntilExit() }
            let w = try svite(exe, ["status", "--connect", "tcp://127.0.0.1:\(statusPort)", "--watch", "--interval", "0.3", "--timeout", "5"], seconds: 4)
            let snapshots = w.out.components(separatedBy: "\n--- ").count
            #expect(w.out.hasPrefix("--- ") && snapshots >= 3 && !w.out.contains("\u{1B}[") && w.out.contains("waiting for workers"), "\(w.out.prefix(600))")
        }
    }

    /// A config error exits 78 (EX_CONFIG), which the systemd units do not retry; a thread
    /// count in SVITE_THREADS that is not one is refused, not taken as "every core".
    @Test func configErrorsAndBadThreadCountsHaveTheirOwnExit() throws {
        let exe = try sviteBinary()
        let config = try svite(exe, ["coordinator", "--set", "training.epohcs=3", "--bind", "tcp://127.0.0.1:\(try freePort())", "--status", "none"])
        #expect(config.status == 78 && config.err.contains("did you mean 'epochs'"), "\(config)")
        for command in [["worker", "--coordinator", "tcp://127.0.0.1:1"], ["coordinator", "--status", "none"]] {
            let r = try svite(exe, command, environment: ["SVITE_THREADS": "eight"])
            #expect(r.status == 64 && r.err.contains("SVITE_THREADS must be 0 (every core) to 1024 (got 'eight')"), "\(command): \(r)")
        }
    }

    /// SIGTERM twice (a supervisor's repeat, Slurm reaching a step twice) still stops at a
    /// checkpoint; only a second Ctrl-C quits at once.
    @Test func aSecondSigtermStillStopsAtACheckpoint() throws {
        let exe = try sviteBinary()
        try withTemporaryDirectory { dir in
            try writeSyntheticIDX(dir: dir, train: 256, test: 16)
            let config = try tinyRunConfig(dataDir: dir, extra: ["training.epochs=0", "training.max_steps=1000000"])
            try config.yaml.write(toFile: "\(dir)/tiny.yaml", atomically: true, encoding: .utf8)
            let p = try startSvite(exe, ["train", "--plain", "--workers", "0", "--config", "\(dir)/tiny.yaml", "--out", "\(dir)/run"])
            let deadline = Date().addingTimeInterval(60)
            while !MetricsLog.read("\(dir)/run/metrics.jsonl").contains(where: { $0.kind == .train }) && p.isRunning && Date() < deadline {
                Thread.sleep(forTimeInterval: 0.05)
            }
            kill(p.processIdentifier, SIGTERM)
            Thread.sleep(forTimeInterval: 0.01)
            kill(p.processIdentifier, SIGTERM)
            p.waitUntilExit()
            #expect(p.terminationReason == .exit && p.terminationStatus == 0, "\(p.terminationStatus)")
            #expect(MetricsLog.read("\(dir)/run/metrics.jsonl").last?.kind == .stopped)
            #expect((try? Checkpoint.newestValid("\(dir)/run")) != nil)
        }
    }

    @Test func evalOfAnotherKindOfFileSaysSo() throws {
        let exe = try sviteBinary()
        let r = try svite(exe, ["eval", "\(repoRoot)/configs/default.yaml"])
        #expect(r.status == 1 && r.err.contains("not a safetensors file") && r.err.contains("svite export"), "\(r.err)")
    }

    /// Help examples are whole commands at 80 columns: a long one is continued with `\`,
    /// never wrapped mid-command, so copy and paste works.
    @Test func helpExamplesAreNotWrapped() throws {
        let exe = try sviteBinary()
        let commands = [["train"], ["coordinator"], ["worker"], ["status"], ["keygen"], ["eval"], ["export"], ["masks"], ["tokens"],
                        ["data-folder"], ["plot"], ["experiment"], ["bench", "model"], ["bench", "gemm"], ["bench", "comm"], ["fuzz"]]
        for command in commands {
            let help = try svite(exe, command + ["--help"], environment: ["COLUMNS": "80"]).out
            guard let examples = help.range(of: "Examples:") else { continue }
            var previous = ""
            var checked = 0
            for line in help[examples.upperBound...].split(separator: "\n", omittingEmptySubsequences: false).dropFirst() {
                if line.trimmingCharacters(in: .whitespaces).isEmpty { break }
                let text = line.trimmingCharacters(in: .whitespaces)
                #expect(text.hasPrefix("svite ") || previous.hasSuffix("\\") || text.hasPrefix("#"),
                        "svite \(command.joined(separator: " ")) --help: a wrapped example line: '\(line)'")
                previous = text
                checked += 1
            }
            #expect(checked > 0, "svite \(command.joined(separator: " ")) --help: no example read")
        }
    }
}

extension CommandLineTests {
    /// A run directory that cannot be made, or one on a read-only file system, is an
    /// error naming the directory and the reason in words (before: a raw
    /// "NSCocoaErrorDomain error" string, or "step 0: ..."); Foundation's file errors read
    /// as "PATH: reason" wherever they surface.
    @Test func fileErrorsSayWhichFileAndWhy() throws {
        #expect(FileErrorText.withPath(CocoaError(.fileWriteNoPermission, userInfo: [NSFilePathErrorKey: "/runs/x"])) == "/runs/x: permission denied")
        #expect(FileErrorText.describe(CocoaError(.fileWriteVolumeReadOnly)) == "read-only file system")
        #expect(FileErrorText.describe(NSError(domain: NSPOSIXErrorDomain, code: Int(ENOSPC))) == "no space left on device")
        #expect(FileErrorText.isFoundationFileError(CocoaError(.fileWriteNoPermission)) && !FileErrorText.isFoundationFileError(RunDirectoryError(message: "x")))
        let exe = try sviteBinary()
        let r = try svite(exe, ["train", "--workers", "0", "--out", "/proc/svite-cannot-make/run"])
        #expect(r.status == 1 && r.err.contains("Error: cannot make the run directory /proc/svite-cannot-make/run:") && !r.err.contains("step 0"), "\(r.err)")
    }
}
