import ArgumentParser
import Config
import Foundation

/// Prints a config as a run would store it: to see what a run will use before it starts,
/// or to hand the same recipe to another tool (benchmarks/ddp_reference.py reads it).
struct ConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Print a config resolved, every default written out, as a run stores it in RUN/config.yaml.",
        discussion: """
        Examples:
          svite config --config fmnist-6head
          svite config --config my.yaml --set training.epochs=3 > resolved.yaml
        """
    )

    @OptionGroup var configOptions: ConfigOptions

    func run() throws {
        let config = try ConfigExit.map { try configOptions.load() }
        print(config.yaml, terminator: "")
    }
}
