import ArgumentParser
import Config
import Core
import Foundation
import Kernels
import Logging
import Model
#if canImport(Glibc)
import Glibc
#endif


@main
struct Svite: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "svite",
        abstract: "Sparse vision transformers (SViTE, S2ViTE, SViTE+) trained on CPU machines.",
        discussion: """
        One binary plays every role. Configs are YAML files (see configs/) or the built-in \
        names \(BuiltinConfigs.all.keys.sorted().joined(separator: ", ")).
        """,
        version: SviteVersion.description,
        subcommands: [Train.self, CoordinatorCommand.self, WorkerCommand.self, StatusCommand.self, ConfigCommand.self, KeygenCommand.self, Eval.self, Export.self, Masks.self, Tokens.self, DataFolder.self, PlotCommand.self, ExperimentCommand.self, Bench.self, Fuzz.self]
    )

    static func main() {
        // A process started from a thread that blocks signals (a dispatch worker's, some
        // supervisors') inherits that mask: Ctrl-C and SIGTERM would never arrive.
        var none = sigset_t()
        sigemptyset(&none)
        sigprocmask(SIG_SETMASK, &none, nil)
        Relaunch.withFittingOpenBLASKernels()
        if let message = UnknownCommand.message(Array(CommandLine.arguments.dropFirst())) {
            FileHandle.standardError.write(Data((message + "\n").utf8))
            Glibc.exit(ExitCode.validationFailure.rawValue)
        }
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            // Foundation's file errors read "The operation could not be completed.
            // (NSCocoaErrorDomain error 513.)": say which file and what went wrong.
            exit(withError: FileErrorText.isFoundationFileError(error) ? CommandFailure(FileErrorText.withPath(error)) : error)
        }
    }
}

/// `svite trian`: ArgumentParser would say only "Unexpected argument"; name the command meant.
enum UnknownCommand {
    static var names: [String] { Svite.configuration.subcommands.map { $0._commandName } + ["help"] }

    static func message(_ args: [String]) -> String? {
        guard let first = args.first, !first.hasPrefix("-"), !names.contains(first) else { return nil }
        let close = names.map { ($0, editDistance($0, first)) }.min { $0.1 < $1.1 }
        let guess = close.flatMap { $0.1 <= max(2, first.count / 3) ? $0.0 : nil }
        return "Error: '\(first)' is not a svite command" + (guess.map { "; did you mean '\($0)'?" } ?? "")
            + "\nCommands: \(names.filter { $0 != "help" }.joined(separator: ", ")) ('svite --help' says what each does)"
    }
}

/// OpenBLAS chooses its kernels from a table of CPU models when it loads, and reads
/// OPENBLAS_CORETYPE only then. On a CPU newer than its table it falls back to generic
/// kernels (Emerald Rapids ran SSE3 kernels at a sixth of the speed). When the user has
/// not set the variable and the kernels OpenBLAS picked are below what the CPU's
/// features allow, svite sets it to the family that fits and starts itself again, once,
/// before doing anything else (same process id, arguments and descriptors).
enum Relaunch {
    static func withFittingOpenBLASKernels() {
        let env = ProcessInfo.processInfo.environment
        guard let core = Engine.openBLASCoreToSet(environment: env, runningCore: BLAS.coreName, cpu: .current) else { return }
        setenv("OPENBLAS_CORETYPE", core, 1)
        setenv("SVITE_OPENBLAS_RELAUNCHED", "1", 1)
        let args = CommandLine.arguments.map { strdup($0) } + [nil]
        execv("/proc/self/exe", args)
        // execv returns only on failure: go on with the kernels OpenBLAS chose (the engine
        // report warns about them if OpenBLAS is used).
        unsetenv("OPENBLAS_CORETYPE")
        FileHandle.standardError.write(Data("svite: could not restart with OPENBLAS_CORETYPE=\(core) (errno \(errno)); OpenBLAS keeps its \(BLAS.coreName) kernels\n".utf8))
    }
}

/// A command that was called correctly but cannot do its work (no coordinator answering,
/// a run without masks): printed as "Error: ..." with exit status 1 and no usage text,
/// which ArgumentParser keeps for wrong arguments (ValidationError, exit 64).
struct CommandFailure: Error, CustomStringConvertible {
    var description: String
    init(_ message: String) { description = message }
}

extension BackendChoice: ExpressibleByArgument {}
extension Precision: ExpressibleByArgument {}
extension SparseKernelMode: ExpressibleByArgument {}

/// How this process computes: flags that override the config's compute.backend and
/// training.precision.
struct ComputeOptions: ParsableArguments {
    @Option(name: .long, help: "Matrix-product backend: auto (oneDNN on x86-64), onednn or openblas. Overrides compute.backend.")
    var backend: BackendChoice?

    @Option(name: .long, help: "Matrix-product precision: fp32, or bf16 (bf16 operands, fp32 accumulation and master weights; needs AVX512-BF16 or AMX, else fp32 runs). Overrides training.precision.")
    var precision: Precision?

    @Option(name: .long, help: "Masked block layers on sparse kernels: auto (per layer, whichever this machine runs faster), on or off. Overrides compute.sparse_kernels.")
    var sparseKernels: SparseKernelMode?

    /// The flags as config overrides (`--set` form).
    var overrides: [String] {
        (backend.map { ["compute.backend=\($0.rawValue)"] } ?? []) + (precision.map { ["training.precision=\($0.rawValue)"] } ?? [])
            + (sparseKernels.map { ["compute.sparse_kernels=\($0.rawValue)"] } ?? [])
    }
}

/// Options every command shares.
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = ProcessInfo.processInfo.environment["SVITE_LOG_LEVEL"] ?? "info"

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical (got '\(logLevel)')")
        }
    }

    /// Sets up swift-log once, writing to standard error, and returns a logger.
    func bootstrap(_ label: String) -> Logger {
        LoggingBootstrap.once(level: Logger.Level(rawValue: logLevel) ?? .info)
        return Logger(label: label)
    }
}

enum LoggingBootstrap {
    nonisolated(unsafe) private static var done = false
    static func once(level: Logger.Level) {
        guard !done else { return }
        done = true
        LoggingSystem.bootstrap { label in TerminalLog(label: label, level: level) }
    }
}

/// The thread count, shared by every command that computes.
struct ThreadOptions: ParsableArguments {
    @Option(name: .customLong("threads"), help: ArgumentHelp("Threads for computation; also sets OpenBLAS's. 0 or unset: every core.", valueName: "n"))
    var requested: Int?

    /// The count to use: every core for 0 or none.
    var threads: Int { ThreadCount.resolve(requested ?? 0) }

    func validate() throws { try ThreadCount.check(requested) }
}

/// `--threads N` as every command takes it: 1 to 1024, or 0 for every core (as the
/// config's training.threads).
enum ThreadCount {
    static func resolve(_ n: Int) -> Int { n > 0 ? n : ProcessInfo.processInfo.activeProcessorCount }

    static func check(_ n: Int?) throws {
        if let n, n < 0 || n > 1024 { throw ValidationError("--threads must be 0 (every core) to 1024 (got \(n))") }
    }

    /// `--threads`, else SVITE_THREADS (workers, the coordinator), checked alike: a value
    /// that is not a count is an error, never "every core".
    static func flagOrEnvironment(_ flag: Int?) throws -> Int? {
        if let flag { try check(flag); return flag }
        guard let text = ProcessInfo.processInfo.environment["SVITE_THREADS"] else { return nil }
        guard let n = Int(text.trimmingCharacters(in: .whitespaces)), (0 ... 1024).contains(n) else {
            throw ValidationError("SVITE_THREADS must be 0 (every core) to 1024 (got '\(text)')")
        }
        return n
    }
}
