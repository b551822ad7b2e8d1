import ArgumentParser
import Config
import Datasets
import Foundation
import Model
import Pictures
import Sparsity
import Training

struct Masks: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "masks",
        abstract: "Draw a sparse checkpoint's masks: per-layer heatmaps and a density chart.",
        discussion: """
        For each prunable layer, LL-NAME.png shows three panels side by side (like the \
        paper's Fig. A6): the initial random topology (grey), the current mask (blue) and \
        every weight that was ever active (red), rows = output features, columns = input \
        features; layers larger than --max-side are shown as the fraction active per block. \
        density.svg charts each layer's density and exploration. Structured runs (s2vite, \
        ssp) also get heads.svg, a blocks × heads grid of kept, once-kept and never-kept heads \
        (like the paper's Fig. A7), and heads.png and neurons.png, the same three panels over \
        blocks × units.

        Example: svite masks runs/svite-50 --out runs/svite-50/masks
        """
    )

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("Checkpoint or run directory of a sparse run.", valueName: "checkpoint"))
    var checkpoint: String

    @Option(name: .long, help: ArgumentHelp("Output directory (default: masks/ in the run directory).", valueName: "dir"))
    var out: String?

    @Option(name: .long, help: "Largest side of a heatmap panel in pixels.")
    var maxSide: Int = 512

    func run() throws {
        _ = global.bootstrap("svite.masks")
        let w = try LoadedWeights.load(checkpoint)
        guard let masks = w.masks else {
            throw CommandFailure("\(w.path) is from a dense run (sparsity.method: dense): there are no masks to draw")
        }
        let c = w.config
        let initial = MaskSet.initial(c.sparsity, model: ViTModel(config: c.model), seed: c.topologySeed)!
        let dir = out ?? "\(Checkpoint.runDirectory(of: w.path))/masks"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var layers: [MaskPictures.Layer] = []
        for (k, t) in masks.prunable.enumerated() {
            let rows = t.shape[0], cols = t.count / rows
            let layer = MaskPictures.Layer(name: t.name, rows: rows, cols: cols, initial: Array(initial.mask.view(t)),
                                           current: Array(masks.mask.view(t)), explored: Array(masks.everActive.view(t)))
            layers.append(layer)
            let file = String(format: "%@/%02d-%@.png", dir, k, t.name.replacingOccurrences(of: ".", with: "-"))
            try MaskPictures.panel(layer, maxSide: maxSide).png().write(to: URL(fileURLWithPath: file))
        }
        if masks.isStructured {
            try drawUnits(masks: masks, initial: initial, config: c, step: w.step ?? 0, dir: dir)
        }
        let title = String(format: "%@, step %d: %.1f%% sparse, %.1f%% of prunable weights explored",
                           c.name, w.step ?? 0, (1 - masks.density) * 100, masks.explorationRate * 100)
        try MaskPictures.densityChart(layers, title: title).write(toFile: "\(dir)/density.svg", atomically: true, encoding: .utf8)
        print("\(layers.count) layer pictures and density.svg in \(dir)")
    }

    /// S2ViTE/SSP: the heads grid (SVG) and the heads and neurons as block × unit panels
    /// (initial | current | explored).
    func drawUnits(masks: MaskSet, initial: MaskSet, config c: RunConfig, step: Int, dir: String) throws {
        let model = ViTModel(config: c.model)
        let now = UnitSelection(masks: masks, model: model), first = UnitSelection(masks: initial, model: model)
        let ever = UnitSelection(mask: masks.everActive.pointer, model: model)
        let title = "\(c.name), step \(step): \(now.headCount) of \(c.model.depth * c.model.heads) heads, \(now.neuronCount) of \(c.model.depth * c.model.hidden) MLP neurons kept"
        try MaskPictures.unitGrid(current: now.heads, explored: ever.heads, initial: first.heads, unitName: "head ", title: title)
            .write(toFile: "\(dir)/heads.svg", atomically: true, encoding: .utf8)
        func flat(_ s: [[Bool]]) -> [Float] { s.flatMap { $0.map { $0 ? 1 : 0 } } }
        for (name, pick) in [("heads", { (s: UnitSelection) in s.heads }), ("neurons", { (s: UnitSelection) in s.neurons })] {
            let cols = pick(now).first?.count ?? 0
            let layer = MaskPictures.Layer(name: name, rows: c.model.depth, cols: cols, initial: flat(pick(first)),
                                           current: flat(pick(now)), explored: flat(pick(ever)))
            try MaskPictures.panel(layer, maxSide: maxSide).png().write(to: URL(fileURLWithPath: "\(dir)/\(name).png"))
        }
        print("heads.svg, heads.png and neurons.png (blocks × units: initial | current | explored) in \(dir)")
    }
}
