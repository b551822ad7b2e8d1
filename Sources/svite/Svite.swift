import ArgumentParser
import Foundation
import Logging


@main
struct Svite: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "svite",
        abstract: "Sparse vision transformers (SViTE, S2ViTE, SViTE+) trained on CPU machines.",
        discussion: """
        One binary plays every role. Configs are YAML files (see configs/) or the built-in \
        names deit-tiny, deit-small, deit-base and fmnist-tiny.
        """,
        subcommands: [Train.self, CoordinatorCommand.self, WorkerCommand.self, StatusCommand.self, Eval.self, Export.self, Masks.self, Tokens.self, ExperimentCommand.self, Bench.self]
    )
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
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
    }
}

/// The thread count, shared by every command that computes.
struct ThreadOptions: ParsableArguments {
    @Option(name: .long, help: "Threads for computation; also sets OpenBLAS's. Defaults to the number of cores.")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    func validate() throws {
        guard threads >= 1 && threads <= 1024 else {
            throw ValidationError("--threads must be between 1 and 1024 (got \(threads))")
        }
    }
}
