import ArgumentParser

@main
struct Svite: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "svite", abstract: "Sparse vision transformers.")
}
