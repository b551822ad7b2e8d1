import ArgumentParser
import Datasets
import Foundation
import Kernels
import Model
import Pictures
import Plot
import Training

struct Tokens: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Draw which patches an SViTE+ model keeps: test images with the removed patches greyed out.",
        discussion: """
        Runs the first --count test images through the model (evaluation mode: the \
        deterministic top-k of the selector's scores) and writes tokens.png, a grid of the \
        images enlarged --scale times with every removed patch washed out to grey and \
        framed (like the paper's Fig. 5), and tokens.json with the kept patch indices. It \
        also prints how the removed patches differ from the kept ones: their mean pixel \
        intensity and the share of background (near-black) patches among each; tokens.json \
        carries the same numbers under "statistics". The statistics are measured over the \
        first --statistics test images (default 1000), the picture shows the first --count.

        Example: svite tokens runs/svite-plus --out runs/svite-plus/tokens
        """
    )

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("Checkpoint, run directory or exported weights of a model with a token selector.", valueName: "checkpoint"))
    var checkpoint: String

    @Option(name: .long, help: ArgumentHelp("Output directory (default: tokens/ in the run directory).", valueName: "dir"))
    var out: String?

    @Option(name: .long, help: "Test images to draw.")
    var count: Int = 32

    @Option(name: .long, help: "Test images the removed/kept statistics are measured over (at least --count).")
    var statistics: Int = 1000

    @Option(name: .long, help: "Pixels per image pixel.")
    var scale: Int = 4

    @Option(name: .long, help: "Images per row.")
    var columns: Int = 8

    func validate() throws {
        guard (1 ... 1024).contains(count) else { throw ValidationError("--count must be between 1 and 1024 (got \(count))") }
        guard statistics >= 1 else { throw ValidationError("--statistics must be at least 1 (got \(statistics))") }
        guard (1 ... 32).contains(scale) else { throw ValidationError("--scale must be between 1 and 32 (got \(scale))") }
        guard columns >= 1 else { throw ValidationError("--columns must be at least 1 (got \(columns))") }
    }

    func run() throws {
        _ = global.bootstrap("svite.tokens")
        let w = try LoadedWeights.load(checkpoint)
        let c = w.config
        guard c.model.hasTokenSelector else {
            throw CommandFailure("\(w.path) has no token selector (model.token_keep is not set): every patch reaches the blocks")
        }
        try c.checkData()
        var data = try c.loadData(.test)
        let drawn = min(count, data.count), measured = min(max(statistics, drawn), data.count)
        // An image folder lists its pictures class by class: the first ones would all be of
        // one class, so measure on pictures spread over the folder and draw some of each.
        let folder = data.files != nil
        if folder { data = data.prefix(measured) }
        let shown = folder ? (0 ..< drawn).map { $0 * measured / drawn } : Array(0 ..< drawn)
        let survey = TokenSurvey(model: ViTModel(config: c.model), params: w.params.pointer, dataset: data,
                                 mean: c.data.mean, std: c.data.std, count: measured,
                                 threads: ProcessInfo.processInfo.activeProcessorCount)
        let kept = survey.kept, k = c.model.keptPatches
        let source = BatchAssembler(dataset: data, mean: c.data.mean, std: c.data.std, augmentation: .none, seed: 0)
        let raw = (0 ..< measured).map { source.bytes(of: $0) }
        let dir = out ?? "\(Checkpoint.runDirectory(of: w.path))/tokens"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let stats = TokenStatistics(images: raw, channels: data.channels, size: c.model.imageSize, patch: c.model.patchSize, kept: kept)
        let names = data.classNames ?? c.data.kind.classNames
        func name(_ k: Int) -> String { k < names.count ? names[k] : "class \(k)" }
        let side = c.model.imageSize * scale
        let panels = shown.map { i in
            Figure.Panel(caption: "true: \(name(survey.labels[i]))", width: side, height: side,
                         rgb: TokenPictures.marked(pixels: raw[i], channels: data.channels, size: c.model.imageSize,
                                                   patch: c.model.patchSize, kept: Set(kept[i]), scale: scale),
                         note: "predicted: \(name(survey.predicted[i]))",
                         noteColour: survey.predicted[i] == survey.labels[i] ? (0.0, 0.447, 0.698) : (0.835, 0.369, 0.0))
        }
        let title = String(format: "%@: %d of %d patches kept per image; removed patches greyed out (%.0f%% of them background, %.0f%% of all patches)",
                           c.name, k, c.model.numPatches, 100 * stats.backgroundAmongRemoved, 100 * stats.backgroundOverall)
        var figure = Figure(title: title, panels: panels, columns: columns,
                            legend: [.init(colour: (175 / 255, 175 / 255, 175 / 255), label: "removed by the selector"),
                                     .init(colour: (0.0, 0.447, 0.698), label: "prediction right"), .init(colour: (0.835, 0.369, 0.0), label: "prediction wrong")])
        figure.minSide = side
        try figure.write(to: "\(dir)/tokens.png", format: .png)
        let statsObject = try JSONSerialization.jsonObject(with: JSONEncoder().encode(stats))
        let info: [String: Any] = ["kept_patches": shown.map { kept[$0] }, "patches": c.model.numPatches, "keep": k, "images": drawn,
                                   "accuracy_on_measured": survey.accuracy, "source": w.path, "statistics": statsObject]
        try JSONSerialization.data(withJSONObject: info, options: [.sortedKeys]).write(to: URL(fileURLWithPath: "\(dir)/tokens.json"))
        print("\(drawn) images drawn, \(k) of \(c.model.numPatches) patches kept each: \(dir)/tokens.png and tokens.json")
        let scope = folder ? "\(measured) test images spread over the classes" : "the first \(measured) test images"
        print(String(format: "over %@ (top-1 %.2f%% with this selection):", scope, 100 * survey.accuracy))
        print(stats.summary)
    }
}
