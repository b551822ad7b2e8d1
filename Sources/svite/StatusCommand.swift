import ArgumentParser
import Coordinator
import Core
import Foundation
import Training
import Transport
#if canImport(Glibc)
import Glibc
#endif

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Ask a coordinator how its run is going, or a run directory how its run went.",
        discussion: """
        Reads only: nothing sent to the status socket changes the run.

        A run directory names its coordinator: `svite train` and `svite coordinator` write \
        the status endpoint to RUN_DIR/status.endpoint while they run. Once no coordinator \
        serves the run (finished, stopped, killed), RUN_DIR's metrics.jsonl tells how it \
        ended, its last evaluation and its training time.

        --watch redraws the table in place on a terminal; into a file or a pipe it appends \
        time-stamped snapshots, flushed as they come.

        Examples:
          svite status runs/default --watch
          svite status --connect tcp://head-node:5556
          svite status --connect tcp://127.0.0.1:5556 --watch
          svite status --json | jq .workers
          svite status --connect tcp://head-node:5556 \\
              --secret-key keys/me.key_secret \\
              --coordinator-key keys/coordinator.key
        """
    )

    @OptionGroup var keys: CurveClientCLIOptions

    @Argument(help: ArgumentHelp("A run directory: its running coordinator is asked (it names its status endpoint), or its metrics are summarised.", valueName: "run-dir"))
    var runDirectory: String?

    @Option(name: .long, help: ArgumentHelp("The coordinator's status endpoint (default: SVITE_STATUS, or tcp://127.0.0.1:5556).", valueName: "endpoint"))
    var connect: String?

    @Flag(name: .long, help: "Redraw every --interval seconds until interrupted or the run ends.")
    var watch = false

    @Flag(name: .long, help: "Print the raw JSON document.")
    var json = false

    @Option(name: .long, help: "Seconds between refreshes with --watch.")
    var interval: Double = 2

    @Option(name: .long, help: "Seconds to wait for an answer.")
    var timeout: Double = 3

    func validate() throws {
        if runDirectory != nil && connect != nil { throw ValidationError("give a run directory or --connect, not both") }
        guard interval > 0 && timeout > 0 else { throw ValidationError("--interval and --timeout must be positive") }
        if let connect { _ = try EndpointOption.check(connect, "--connect", role: .connect) }
    }

    /// Where to ask: the run directory's status file, --connect, SVITE_STATUS, the default.
    func endpoint() throws -> String {
        if let dir = runDirectory { return try StatusFile.read(runDirectory: dir) }
        if let connect { return try EndpointOption.check(connect, "--connect", role: .connect) }
        return environment["SVITE_STATUS"].map { $0.replacingOccurrences(of: "*", with: "127.0.0.1") } ?? "tcp://127.0.0.1:5556"
    }

    func run() throws {
        // A run directory whose coordinator is gone: what its metrics say.
        if let dir = runDirectory, !FileManager.default.fileExists(atPath: StatusFile.path(dir)), let history = RunHistory.read(runDirectory: dir) {
            return show(history, dir)
        }
        let connect = try endpoint()
        let curve = try keys.load()
        let terminal = isatty(STDOUT_FILENO) == 1
        var answered = false
        repeat {
            let doc: StatusDocument
            do {
                doc = try Self.query(connect, timeout: timeout, curve: curve)
            } catch let e as CommandFailure {
                // It answered before (the run has ended), or its status file outlived it
                // (killed): the metrics tell the rest. A coordinator that still holds the
                // run directory is running and did not answer: that is the error to show.
                if let dir = runDirectory, !RunDirectoryLock.isHeld(dir), let history = RunHistory.read(runDirectory: dir) {
                    if !answered { FileHandle.standardError.write(Data("\(connect) does not answer and no process holds \(dir): its coordinator is not running\n".utf8)) }
                    return show(history, dir)
                }
                guard watch && answered else { throw e }
                print("\(connect) no longer answers: the run has ended or its coordinator stopped")
                return
            }
            answered = true
            if json {
                print(String(decoding: doc.encoded(), as: UTF8.self))
            } else {
                // On a terminal the table redraws in place; into a file or a pipe each
                // snapshot follows the last under a time stamp.
                if watch && terminal { print("\u{1B}[H\u{1B}[2J", terminator: "") }
                if watch && !terminal { print("--- \(localTimeText(format: "%H:%M:%S"))") }
                print(StatusTable.render(doc, columns: terminal ? ProgressDisplay.terminalColumns(STDOUT_FILENO) : 100))
            }
            fflush(nil)
            if watch { Thread.sleep(forTimeInterval: interval) }
        } while watch
    }

    func show(_ history: RunHistory, _ dir: String) {
        if json {
            var d = history.json
            d["run_directory"] = dir
            let data = (try? JSONSerialization.data(withJSONObject: d, options: [.sortedKeys])) ?? Data("{}".utf8)
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(history.text(runDirectory: dir))
        }
        fflush(nil)
    }

    static func query(_ endpoint: String, timeout: Double, curve: CurveClientKeys? = nil) throws -> StatusDocument {
        let ctx = try ZMQContext()
        let s = try ZMQSocket(ctx, .req)
        defer { s.close() }
        if let curve { try s.makeCurveClient(curve) }
        try s.connect(endpoint)
        try s.send([Array("status".utf8)])
        guard try Poller.readable([s], timeoutMs: Int(timeout * 1000))[0], let reply = try s.receive(), let body = reply.first else {
            let keyHint = curve == nil
                ? " A coordinator with CURVE keys answers other machines only through CURVE: pass --secret-key and --coordinator-key."
                : " With CURVE: is --coordinator-key its public key, and is this key (\(curve!.pair.publicKey.z85)) in its --authorized-keys?"
            throw CommandFailure("no answer from \(endpoint) within \(timeout) s: is the coordinator running, and is this its --status endpoint?\(keyHint)")
        }
        do {
            return try StatusDocument.decode(Data(body))
        } catch {
            throw CommandFailure("\(endpoint) answered with something that is not a status document: \(error)")
        }
    }
}
