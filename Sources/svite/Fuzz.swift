import ArgumentParser
import Config
import Coordinator
import Foundation
import Transport
import Wire

struct Fuzz: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fuzz",
        abstract: "Feed random and mutated frames to the decoders and to a live coordinator; report any that is not cleanly refused.",
        discussion: """
        --frames frames (valid frames of every message type with bits flipped, cut short, \
        replaced by noise, or changed and re-signed) go through the frame and payload \
        decoders in this process; --coordinator-frames more are sent over loopback to a \
        coordinator started here, which must count them as bad frames and still answer its \
        status socket. Exits 1 if any frame raised something other than a wire error, or \
        the coordinator stopped answering.

        Example: svite fuzz --frames 1000000 --coordinator-frames 100000
        """
    )

    @OptionGroup var global: GlobalOptions

    @Option(name: .long, help: "Frames through the decoders.")
    var frames: Int = 1_000_000

    @Option(name: .long, help: "Frames sent to a live coordinator on loopback.")
    var coordinatorFrames: Int = 100_000

    @Option(name: .long, help: "Seed of the mutations.")
    var seed: UInt64 = 1

    func validate() throws {
        guard frames >= 0, coordinatorFrames >= 0 else { throw ValidationError("--frames and --coordinator-frames must be >= 0") }
    }

    func run() throws {
        let log = global.bootstrap("svite.fuzz")
        let clock = Date()
        let report = FrameFuzzer.run(frames: frames, seed: seed) { done in log.info("\(done) frames decoded or refused") }
        print("decoders: \(report.frames) frames, \(report.accepted) accepted, \(report.refused) refused as bad, \(report.otherErrors.count) other errors (\(String(format: "%.1f", Date().timeIntervalSince(clock))) s)")
        for e in report.otherErrors { print("  not a wire error: \(e)") }
        var failed = !report.otherErrors.isEmpty

        if coordinatorFrames > 0 {
            let config = try RunConfig.resolve("default")
            var o = ClusterOptions()
            o.bind = "tcp://127.0.0.1:*"
            o.statusBind = "tcp://127.0.0.1:*"
            let source = try ClusterGradientSource(config: config, options: o, logger: log)
            defer { source.finish(reason: "fuzz done") }
            let ctx = try ZMQContext()
            let peer = try ZMQSocket.workerDealer(ctx, identity: "fuzzer", maxMessageBytes: -1, heartbeatMs: 1000)
            try peer.connect(source.endpoint)
            var fuzzer = FrameFuzzer(seed: seed &+ 1)
            let start = Date()
            for k in 0 ..< coordinatorFrames {
                _ = try peer.send([fuzzer.frame(k)])
                if k % 10_000 == 9_999 { Thread.sleep(forTimeInterval: 0.01) }  // let the receiver keep up
            }
            // Everything sent is refused (a peer that never joined); then the status must answer.
            let deadline = Date().addingTimeInterval(60)
            while source.badFrameTotal < coordinatorFrames && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
            let answered = (try? StatusCommand.query(source.statusEndpoint!.replacingOccurrences(of: "*", with: "127.0.0.1"), timeout: 5)) != nil
            print("coordinator: \(coordinatorFrames) frames sent, \(source.badFrameTotal) counted as bad, status \(answered ? "answers" : "SILENT") (\(String(format: "%.1f", Date().timeIntervalSince(start))) s)")
            failed = failed || !answered || source.badFrameTotal < coordinatorFrames
        }
        if failed { throw CommandFailure("fuzzing found frames that were not cleanly refused (above)") }
    }
}
