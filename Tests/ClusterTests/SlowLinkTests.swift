import Config
import Foundation
import Testing
import TestSupport
@testable import Training

/// Two network namespaces joined by a veth pair shaped with tbf (this kernel has no netem):
/// the coordinator and a fast worker on one side, a worker behind a slow link on the other.
extension ClusterTests {
    /// Runs `ip` or `tc` with these arguments; false when it fails.
    @discardableResult
    func ipTool(_ tool: String, _ args: [String]) -> Bool {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/sbin/\(tool)")
        p.arguments = args
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return false }
        p.waitUntilExit()
        return p.terminationStatus == 0
    }

    /// One worker of two behind a 256 kbit/s link, where each step frame of this model
    /// takes about 5 s (before: the 3 s ZMTP heartbeat bound closed its connection, it
    /// flapped, and steps trained on half the batch with nothing said). It misses the
    /// step deadlines, is benched and the run goes on at the fast worker's pace; every
    /// step's images are either trained or recorded as missing, and the slow worker does
    /// not rejoin over and over.
    @Test func aWorkerBehindASlowLinkIsBenchedAndNoImageGoesUnrecorded() throws {
        let exe = try sviteBinary()
        guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip"), FileManager.default.isExecutableFile(atPath: "/usr/sbin/tc") else {
            print("skipped: needs root and iproute2 for network namespaces")
            return
        }
        let tag = "svs\(getpid() % 100_000)"
        let (c, s) = ("\(tag)c", "\(tag)s")
        defer { for ns in [c, s] { ipTool("ip", ["netns", "del", ns]) } }
        for step in [["netns", "add", c], ["netns", "add", s],
                     ["link", "add", "\(tag)a", "type", "veth", "peer", "name", "\(tag)b"],
                     ["link", "set", "\(tag)a", "netns", c], ["link", "set", "\(tag)b", "netns", s],
                     ["-n", c, "addr", "add", "10.251.7.1/24", "dev", "\(tag)a"], ["-n", s, "addr", "add", "10.251.7.2/24", "dev", "\(tag)b"],
                     ["-n", c, "link", "set", "\(tag)a", "up"], ["-n", s, "link", "set", "\(tag)b", "up"],
                     ["-n", c, "link", "set", "lo", "up"], ["-n", s, "link", "set", "lo", "up"]] {
            guard ipTool("ip", step) else { Issue.record("ip \(step.joined(separator: " ")) failed"); return }
        }
        for (ns, dev) in [(c, "\(tag)a"), (s, "\(tag)b")] {
            guard ipTool("tc", ["-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", "256kbit", "burst", "16kb", "latency", "400ms"]) else {
                Issue.record("tc on \(ns) failed"); return
            }
        }
        try withTemporaryDirectory { dir in
            try writeSyntheticIDX(dir: dir, train: 32 * 24, test: 16)
            // About 40,000 parameters: 160 KB a frame each way, 5 s at 256 kbit/s.
            let config = try tinyRunConfig(dataDir: dir, extra: ["model.dim=48", "training.epochs=0", "training.max_steps=24", "training.batch_size=32",
                                                                 "training.threads=1"])
            try config.yaml.write(toFile: "\(dir)/run.yaml", atomically: true, encoding: .utf8)
            let endpoint = "tcp://10.251.7.1:5555"
            func inside(_ ns: String, _ args: [String]) throws -> Process {
                try startSvite("/usr/sbin/ip", ["netns", "exec", ns, exe] + args)
            }
            let coordinator = try inside(c, ["coordinator", "--plain", "--config", "\(dir)/run.yaml", "--out", "\(dir)/run", "--workers", "2",
                                             "--bind", endpoint, "--status", "none", "--log-level", "warning"])
            let fast = try inside(c, ["worker", "--coordinator", endpoint, "--name", "fast", "--threads", "1", "--log-level", "warning"])
            let slow = try inside(s, ["worker", "--coordinator", endpoint, "--name", "slow", "--threads", "1", "--log-level", "warning"])
            defer { for p in [coordinator, fast, slow] where p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() } }
            let finished = waitForExit(coordinator, seconds: 240)
            #expect(finished && coordinator.terminationStatus == 0, "coordinator: \(finished ? "exit \(coordinator.terminationStatus)" : "still running")")
            let records = MetricsLog.read("\(dir)/run/metrics.jsonl")
            let train = records.filter { $0.kind == .train }
            #expect(train.count == 24)
            for r in train {
                let trained = (r.imagesPerWorker ?? []).reduce(0, +), missing = r.imagesMissing ?? 0
                #expect(trained + missing == 32, "step \(r.step): \(r.imagesPerWorker ?? []) trained, \(missing) recorded missing")
            }
            let events = records.filter { $0.kind == .worker && $0.worker == "slow" }.compactMap(\.event)
            print("slow worker events: \(events); missing per step: \(train.map { $0.imagesMissing ?? 0 })")
            #expect(events.contains("benched"), "\(events)")
            #expect(events.filter { $0 == "rejoined" }.count <= 2, "the slow worker flapped: \(events)")
        }
    }
}
