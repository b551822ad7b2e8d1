import Compression
import ArgumentParser
import Coordinator
import Core
import Foundation
import Kernels
import Logging
import Model
import Training
import Transport
import Wire
import Worker

let environment = ProcessInfo.processInfo.environment

/// Options of the coordinator's sockets, shared by `train` and `coordinator`.
struct ClusterCLIOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("How long a silent worker is waited for before the step goes on without it (seconds).", valueName: "seconds"))
    var workerTimeout: Double = Double(environment["SVITE_WORKER_TIMEOUT"] ?? "") ?? 5

    @Option(name: .long, help: "How uncompressed gradients travel up: fp32 (exact), bf16 (half the bytes), int8 (a quarter) or int4 (an eighth; int8 and int4 each worker keeping its rounding for later steps). Top-k gradients use communication.values.")
    var gradientCodec: ValueCodec?

    /// The flag, else SVITE_GRADIENT_CODEC, else fp32.
    var codec: ValueCodec { gradientCodec ?? environment["SVITE_GRADIENT_CODEC"].flatMap(ValueCodec.init(rawValue:)) ?? .fp32 }

    @Option(name: .long, help: ArgumentHelp("Serve Prometheus text at http://ADDRESS/metrics (HOST:PORT, or :PORT for every interface; env SVITE_METRICS). Off by default.", valueName: "address"))
    var metrics: String?

    /// Flags win over the environment.
    var metricsAddress: String? { metrics ?? environment["SVITE_METRICS"] }

    @Option(name: .long, help: ArgumentHelp("How the batch is divided: throughput (in proportion to each worker's measured images/s, re-balanced every 20 steps when a share would move by more than 10% of the batch) or equal.", valueName: "mode"))
    var balance: BatchBalance = BatchBalance(rawValue: environment["SVITE_BALANCE"] ?? "") ?? .throughput

    func validate() throws {
        guard workerTimeout >= 0.5 && workerTimeout <= 3600 else { throw ValidationError("--worker-timeout must be 0.5 to 3600 seconds (got \(workerTimeout))") }
        if gradientCodec == nil, let e = environment["SVITE_GRADIENT_CODEC"], ValueCodec(rawValue: e) == nil {
            let allowed = ValueCodec.allCases.map(\.rawValue).joined(separator: ", ")
            throw ValidationError("SVITE_GRADIENT_CODEC must be one of \(allowed) (got '\(e)')")
        }
    }

    func options(bind: String, status: String?, workers: Int) -> ClusterOptions {
        var o = ClusterOptions()
        o.bind = bind
        o.statusBind = status
        o.expectedWorkers = workers
        o.workerTimeout = workerTimeout
        o.gradientCodec = codec
        o.balance = balance
        return o
    }
}

/// A CURVE client's key files, shared by `worker` and `status`.
struct CurveClientCLIOptions: ParsableArguments {
    @Option(name: .customLong("secret-key"), help: ArgumentHelp("CURVE: this machine's secret key file (from `svite keygen`; mode 0600). With --coordinator-key.", valueName: "file"))
    var secretKeyFlag: String?
    var secretKey: String? { secretKeyFlag ?? environment["SVITE_SECRET_KEY"] }

    @Option(name: .customLong("coordinator-key"), help: ArgumentHelp("CURVE: the coordinator's public key file (its NAME.key).", valueName: "file"))
    var coordinatorKeyFlag: String?
    var coordinatorKey: String? { coordinatorKeyFlag ?? environment["SVITE_COORDINATOR_KEY"] }

    func validate() throws {
        guard (secretKey == nil) == (coordinatorKey == nil) else {
            throw ValidationError("--secret-key and --coordinator-key go together (CURVE needs both)")
        }
    }

    /// The keys, read and checked (a runtime error when a file is wrong).
    func load() throws -> CurveClientKeys? {
        guard let secretKey, let coordinatorKey else { return nil }
        do { return try CurveClientKeys.load(secretKeyFile: secretKey, serverKeyFile: coordinatorKey) } catch {
            throw CommandFailure("\(error)")
        }
    }
}

struct KeygenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keygen",
        abstract: "Make a CURVE key pair for a coordinator or a worker.",
        discussion: """
        Writes DIR/NAME.key (the public key, to share) and DIR/NAME.key_secret (the secret \
        key, mode 0600, to keep on its machine), each a line of Z85 text.

        A cluster with CURVE: make a pair for the coordinator and one per worker; put every \
        worker's NAME.key into one directory on the coordinator's machine and start it with \
        --secret-key coordinator.key_secret --authorized-keys that directory; start each \
        worker with --secret-key its NAME.key_secret --coordinator-key coordinator.key. \
        Keys not in the directory, and clients without CURVE, get no message through; each \
        refusal is counted in `svite status` and logged. Adding or removing a file in the \
        directory takes effect at the next connection, without a restart.

        Examples:
          svite keygen coordinator --out keys
          svite keygen worker-1 --out keys && cp keys/worker-1.key authorized/
        """
    )

    @Argument(help: "Name of the key pair (letters, digits, '.', '_', '-').")
    var name: String

    @Option(name: .long, help: ArgumentHelp("Directory to write the two files into.", valueName: "dir"))
    var out: String = "."

    @Flag(name: .long, help: "Replace existing files of that name.")
    var force = false

    func validate() throws {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        guard !name.isEmpty, name.count <= 100, name.allSatisfy(allowed.contains), !name.hasPrefix(".") else {
            throw ValidationError("the key name must be 1 to 100 letters, digits, '.', '_' or '-', not starting with '.' (got '\(name)')")
        }
    }

    func run() throws {
        do {
            let pair = try CurveKeyPair.generate()
            let paths = try CurveKeyFile.write(pair, name: name, directory: out, force: force)
            print("public key \(pair.publicKey.z85)")
            print("wrote \(paths.publicPath) (share it) and \(paths.secretPath) (mode 0600, keep it here)")
        } catch let e as CurveError {
            throw CommandFailure("\(e)")
        }
    }
}

struct CoordinatorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coordinator",
        abstract: "Run the coordinator of a cluster: parameters, optimizer, evaluation, checkpoints, status.",
        discussion: """
        Waits for --workers workers before the first step; workers that join later take part \
        from the next step, and workers that stop answering are dropped after \
        --worker-timeout seconds. Everything else is as in `svite train` (run directory, \
        metrics, checkpoints, --resume).

        With --secret-key and --authorized-keys the workers' socket takes CURVE and admits \
        only the public keys in that directory (see `svite keygen --help`); the status \
        socket takes the same keys unless it is bound to loopback (the default). Without \
        keys, anyone who reaches --bind can join and send gradients.

        Environment (flags win): SVITE_BIND, SVITE_STATUS, SVITE_WORKERS, SVITE_CONFIG, \
        SVITE_THREADS, SVITE_METRICS, SVITE_WORKER_TIMEOUT, SVITE_GRADIENT_CODEC, \
        SVITE_BALANCE, SVITE_SECRET_KEY, SVITE_AUTHORIZED_KEYS.

        Exit status: 0 when the run is over (also when it was over before this start), 75 \
        when SIGTERM or Ctrl-C stopped it before the end (a checkpoint was written; start \
        it again with --auto-resume, or --resume, to go on), 1 on an error.

        Examples:
          svite coordinator --config fmnist-tiny --bind 'tcp://*:5555' --workers 4
          svite coordinator --config fmnist-tiny --workers 4 \\
              --secret-key keys/coordinator.key_secret \\
              --authorized-keys keys/workers
        """
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var runOptions: RunOptions
    @OptionGroup var cluster: ClusterCLIOptions

    @Option(name: .long, help: ArgumentHelp("Endpoint the workers connect to.", valueName: "endpoint"))
    var bind: String = environment["SVITE_BIND"] ?? "tcp://*:5555"

    @Option(name: .long, help: ArgumentHelp("Endpoint of the status socket ('none' for none; 'tcp://*:5556' to serve other machines, with CURVE when the coordinator has keys).", valueName: "endpoint"))
    var status: String = environment["SVITE_STATUS"] ?? "tcp://127.0.0.1:5556"

    @Option(name: .long, help: "Workers to wait for before the first step.")
    var workers: Int = Int(environment["SVITE_WORKERS"] ?? "") ?? 1

    @Option(name: .customLong("secret-key"), help: ArgumentHelp("CURVE: the coordinator's secret key file (from `svite keygen`; mode 0600). With --authorized-keys.", valueName: "file"))
    var secretKeyFlag: String?
    var secretKey: String? { secretKeyFlag ?? environment["SVITE_SECRET_KEY"] }

    @Option(name: .customLong("authorized-keys"), help: ArgumentHelp("CURVE: directory of the workers' public key files (*.key) to admit; re-read when it changes.", valueName: "dir"))
    var authorizedKeysFlag: String?
    var authorizedKeys: String? { authorizedKeysFlag ?? environment["SVITE_AUTHORIZED_KEYS"] }

    func validate() throws {
        _ = try EndpointOption.check(bind, "--bind", role: .bind)
        if status != "none" { _ = try EndpointOption.check(status, "--status", role: .bind) }
        guard workers >= 1 && workers <= 4096 else { throw ValidationError("--workers must be 1 to 4096 (got \(workers))") }
        guard (secretKey == nil) == (authorizedKeys == nil) else {
            throw ValidationError("--secret-key and --authorized-keys go together (CURVE needs both)")
        }
    }

    func run() throws {
        let log = global.bootstrap("svite.coordinator")
        var options = cluster.options(bind: try EndpointOption.check(bind, "--bind", role: .bind),
                                      status: status == "none" ? nil : try EndpointOption.check(status, "--status", role: .bind), workers: workers)
        if let secretKey, let authorizedKeys {
            do { options.curve = try CurveServerKeys.load(secretKeyFile: secretKey, authorizedDirectory: authorizedKeys) } catch {
                throw CommandFailure("\(error)")
            }
        }
        var run = runOptions
        run.threads = try ThreadCount.flagOrEnvironment(run.threads)
        try run.execute(log: log, cluster: options, metrics: cluster.metricsAddress, command: "svite coordinator")
    }
}

struct WorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Run a worker: join a coordinator and compute gradients on its share of each step.",
        discussion: """
        The worker gets the config and the weights from the coordinator and reads the data \
        set from its own disk (the config's data.dir). It runs until the coordinator says \
        stop. A worker restarted with the same --name takes over its old place.

        Exit status: 0 when the run is over, 75 when it is not (the coordinator stopped \
        early, or SIGTERM or Ctrl-C stopped this worker): a supervisor that restarts \
        failures brings the worker back to rejoin. 64 for wrong arguments.

        With --secret-key and --coordinator-key the worker talks CURVE (see `svite keygen \
        --help`); a coordinator that does not admit its key sends nothing, and the worker \
        logs what the handshake said and keeps trying.

        Environment (flags win): SVITE_COORDINATOR, SVITE_THREADS, SVITE_WORKER_NAME, \
        SVITE_SECRET_KEY, SVITE_COORDINATOR_KEY.

        Examples:
          svite worker --coordinator tcp://head-node:5555 --threads 8
          svite worker --coordinator tcp://head-node:5555 \\
              --secret-key keys/worker-1.key_secret \\
              --coordinator-key keys/coordinator.key
        """
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var keys: CurveClientCLIOptions

    @Option(name: .long, help: ArgumentHelp("The coordinator's endpoint.", valueName: "endpoint"))
    var coordinator: String = environment["SVITE_COORDINATOR"] ?? "tcp://127.0.0.1:5555"

    @Option(name: .long, help: ArgumentHelp("Threads for computation; 0 or unset: every core.", valueName: "n"))
    var threads: Int?

    @Option(name: .long, help: "Matrix-product backend on this machine: auto, onednn or openblas (default: the run config's compute.backend). The precision is the run's.")
    var backend: BackendChoice?

    @Option(name: .long, help: "Masked block layers on sparse kernels: auto (per layer, whichever this machine runs faster), on or off (default: the run config's compute.sparse_kernels).")
    var sparseKernels: SparseKernelMode?

    @Option(name: .long, help: "Worker id (default: HOST-PID).")
    var name: String?

    /// Flags win over the environment.
    var resolvedThreads: Int { ThreadCount.resolve((try? ThreadCount.flagOrEnvironment(threads)) ?? 0) }
    var resolvedName: String {
        name ?? environment["SVITE_WORKER_NAME"] ?? "\(ProcessInfo.processInfo.hostName)-\(ProcessInfo.processInfo.processIdentifier)"
    }

    @Option(name: .long, help: .hidden)
    var parentPid: Int32?

    func validate() throws {
        _ = try EndpointOption.check(coordinator, "--coordinator", role: .connect)
        _ = try ThreadCount.flagOrEnvironment(threads)
        guard !resolvedName.isEmpty && resolvedName.utf8.count <= 200 else { throw ValidationError("--name must be 1 to 200 bytes") }
    }

    func run() throws {
        let log = global.bootstrap("svite.worker")
        var options = WorkerOptions(coordinator: try EndpointOption.check(coordinator, "--coordinator", role: .connect), name: resolvedName, threads: resolvedThreads, backend: backend)
        options.curve = try keys.load()
        options.sparseKernels = sparseKernels
        // Tests only (not in --help): "SECONDS" or "SECONDS@STEP" makes every step (from STEP
        // on) slower by that much, as a straggler or a stuck compute would be.
        var hooks = WorkerTestHooks()
        if let spec = environment["SVITE_TEST_COMPUTE_DELAY"] {
            let parts = spec.split(separator: "@").map(String.init)
            guard let seconds = Double(parts[0]), seconds >= 0 else { throw CommandFailure("SVITE_TEST_COMPUTE_DELAY must be SECONDS or SECONDS@STEP, got '\(spec)'") }
            hooks.computeDelay = (seconds, parts.count > 1 ? Int(parts[1]) ?? 0 : 0)
        }
        if let parent = parentPid {
            // A local worker of `svite train` ends with it, however it ends (SIGKILL, OOM,
            // a second Ctrl-C): the worker's loop sees its parent change and leaves.
            // (PR_SET_PDEATHSIG would need a C shim, prctl being variadic; the check also
            // covers a parent that died before this line.)
            guard getppid() == parent else { throw CommandFailure("the svite process that started this worker (pid \(parent)) is gone") }
            options.parentPID = parent
        }
        let node = try WorkerNode(options: options, logger: log, hooks: hooks)
        let stop = StopFlag()
        StopSignals.install(stop) {}
        let reason: String
        do {
            reason = try node.run(stop: stop)
        } catch let e as WorkerError {
            // Refused, with what to do; the status says whether starting it again helps.
            FileHandle.standardError.write(Data("Error: \(e.message)\n".utf8))
            throw ExitCode(e.exitCode)
        }
        // Exit 0 only when the run is over: a coordinator stopped before the end (to be
        // resumed) or failed, or a signal to this worker (a drained node, a deleted pod,
        // Ctrl-C) leaves the worker with 75 (EX_TEMPFAIL), so a supervisor that restarts on
        // failure (Kubernetes' pod failure policy, systemd) brings it back to rejoin.
        guard reason == "done" else {
            let why = stop.isRaised ? "stopped by a signal before the run ended" : "the coordinator ended before the run did (\(reason))"
            log.notice("worker \(resolvedName): \(why); exiting with 75 so a supervisor starts this worker again to rejoin")
            throw ExitCode(75)
        }
        log.info("worker \(resolvedName) done (\(reason))")
    }
}

/// Worker processes on this machine, started by `svite train`.
final class LocalWorkers {
    var processes: [Process] = []

    func start(count: Int, threads: Int, endpoint: String, runDirectory: String, logLevel: String) throws {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        try FileManager.default.createDirectory(atPath: runDirectory, withIntermediateDirectories: true)
        for k in 0 ..< count {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: exe)
            p.arguments = ["worker", "--coordinator", endpoint, "--threads", "\(threads)", "--name", "local-\(k)", "--log-level", logLevel,
                           "--parent-pid", "\(getpid())"]
            let logPath = "\(runDirectory)/worker-\(k).log"
            _ = FileManager.default.createFile(atPath: logPath, contents: nil)
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
            handle.seekToEndOfFile()
            p.standardOutput = handle
            p.standardError = handle
            try p.run()
            processes.append(p)
        }
    }

    /// Waits up to `seconds` for the workers to exit, then terminates the rest.
    func stop(waiting seconds: Double = 5) {
        let deadline = Date().addingTimeInterval(seconds)
        while processes.contains(where: \.isRunning) && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        for p in processes where p.isRunning { p.terminate() }
    }
}

extension BatchBalance: ExpressibleByArgument {}
extension ValueCodec: ExpressibleByArgument {}

/// An endpoint flag in libzmq's form (`HOST:PORT` becomes `tcp://HOST:PORT`), or a usage
/// error that shows the form.
enum EndpointOption {
    static func check(_ text: String, _ flag: String, role: Endpoint.Role) throws -> String {
        do { return try Endpoint.normalize(text, role: role) } catch let e as Endpoint.Invalid {
            throw ValidationError("\(flag): \(e)")
        }
    }
}
