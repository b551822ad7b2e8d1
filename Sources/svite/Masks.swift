import ArgumentParser
import Config
import Core
import Datasets
import Foundation
import Model
import Pictures
import Plot
import Sparsity
import Training

struct Masks: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "masks",
        abstract: "Draw a sparse checkpoint's masks: per-layer heatmaps and a density chart.",
        discussion: """
        For each prunable layer, LL-NAME.png is a titled figure of three panels (like the \
        paper's Fig. A6): the initial random topology (grey), the current mask (blue) and \
        every weight that was ever active (red), each captioned with its density, rows = \
        output features, columns = input features, with a legend; layers larger than \
        --max-side are shown as the fraction active per block. \
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
            try figure(layer, title: "\(t.name) (\(rows) × \(cols)), \(c.name) at step \(w.step ?? 0)",
                       xLabel: "input features", yLabel: "output features").write(to: file, format: .png)
        }
        if masks.isStructured {
            try drawUnits(masks: masks, initial: initial, config: c, step: w.step ?? 0, dir: dir)
        }
        let title = String(format: "%@, step %d: %.1f%% sparse, %.1f%% of prunable weights explored",
                           c.name, w.step ?? 0, (1 - masks.density) * 100, masks.explorationRate * 100)
        let bars = MaskCharts.DensityBars(title: title, rows: layers.map { ($0.name, Self.density($0.current), Self.density($0.explored)) })
        for f in LineChart.Format.allCases { try bars.write(to: "\(dir)/density.\(f.rawValue)", format: f) }
        print("\(layers.count) layer pictures and density.png/.svg in \(dir)")
        print(Self.untrainedLine(masks: masks, params: w.params))
    }

    /// How many active weights no update has reached (exactly zero), and the layer with
    /// the most: prune-and-grow under top-k can leave grown weights waiting for hundreds
    /// of steps, which the pictures (active or not) do not show.
    static func untrainedLine(masks: MaskSet, params: FloatBuffer) -> String {
        let counts = masks.untrainedCounts(params.pointer)
        let total = counts.reduce(0, +), active = masks.activePrunable
        guard total > 0 else { return "every active weight has been updated (none is exactly zero)" }
        let worst = counts.indices.max { counts[$0] < counts[$1] }!
        let t = masks.prunable[worst]
        return String(format: "%d of %d active weights (%.1f%%) are exactly zero: grown and not yet updated; most in %@ (%d of %d)",
                      total, active, 100 * Double(total) / Double(max(active, 1)), t.name, counts[worst], masks.activeCount(t))
    }

    /// The share of a mask's entries that are active.
    static func density(_ m: [Float]) -> Double { m.isEmpty ? 0 : Double(m.filter { $0 != 0 }.count) / Double(m.count) }

    /// initial | current | explored as one titled figure, each panel captioned with the
    /// share of weights active (ever active, for explored), the axes named and a legend.
    func figure(_ l: MaskPictures.Layer, title: String, xLabel: String, yLabel: String) -> Figure {
        // Short captions (the legend says what each colour is), so the text can be 8 pt
        // with three panels in a paper's column.
        var panels = [("initial", l.initial, MaskPictures.initialColour), ("now", l.current, MaskPictures.currentColour)].map { name, m, colour in
            let img = MaskPictures.heatmap(m, rows: l.rows, cols: l.cols, maxSide: maxSide, colour: colour)
            return Figure.Panel(caption: String(format: "%@ %.1f%%", name, 100 * Self.density(m)), width: img.width, height: img.height, rgb: img.pixels)
        }
        let map = MaskPictures.explorationMap(current: l.current, explored: l.explored, rows: l.rows, cols: l.cols, maxSide: maxSide)
        panels.append(Figure.Panel(caption: String(format: "explored %.1f%%", 100 * Self.density(l.explored)),
                                   width: map.width, height: map.height, rgb: map.pixels))
        func tint(_ c: [UInt8]) -> (Double, Double, Double) { (Double(c[0]) / 255, Double(c[1]) / 255, Double(c[2]) / 255) }
        let scaled = max(l.rows, l.cols) > maxSide ? " (blocks of weights: deeper = more of them)" : ""
        return Figure(title: title, panels: panels, columns: 3, xLabel: xLabel + scaled, yLabel: yLabel,
                      legend: [.init(colour: tint(MaskPictures.initialColour), label: "active at the start"),
                               .init(colour: tint(MaskPictures.currentColour), label: "active now"),
                               .init(colour: tint(MaskPictures.exploredColour), label: "active earlier, not now"),
                               .init(colour: (1, 1, 1), label: "inactive (never)")])
    }

    /// S2ViTE/SSP: the heads grid (PNG and SVG) and the heads and neurons as block × unit
    /// panels (initial | now | explored).
    func drawUnits(masks: MaskSet, initial: MaskSet, config c: RunConfig, step: Int, dir: String) throws {
        let model = ViTModel(config: c.model)
        let now = UnitSelection(masks: masks, model: model), first = UnitSelection(masks: initial, model: model)
        let ever = UnitSelection(mask: masks.everActive.pointer, model: model)
        let title = "\(c.name), step \(step): \(now.headCount) of \(c.model.depth * c.model.heads) heads, \(now.neuronCount) of \(c.model.depth * c.model.hidden) MLP neurons kept"
        let grid = MaskCharts.UnitGrid(title: title, unitName: "head", current: now.heads, explored: ever.heads, initial: first.heads)
        for f in LineChart.Format.allCases { try grid.write(to: "\(dir)/heads.\(f.rawValue)", format: f) }
        func flat(_ s: [[Bool]]) -> [Float] { s.flatMap { $0.map { $0 ? 1 : 0 } } }
        for (name, pick) in [("heads", { (s: UnitSelection) in s.heads }), ("neurons", { (s: UnitSelection) in s.neurons })] {
            let cols = pick(now).first?.count ?? 0
            let layer = MaskPictures.Layer(name: name, rows: c.model.depth, cols: cols, initial: flat(pick(first)),
                                           current: flat(pick(now)), explored: flat(pick(ever)))
            try figure(layer, title: "\(name == "heads" ? "Attention heads" : "MLP neurons") per block, \(c.name) at step \(step)",
                       xLabel: name == "heads" ? "head" : "neuron", yLabel: "block").write(to: "\(dir)/\(name)-panels.png", format: .png)
        }
        print("heads.png/.svg (blocks × heads), heads-panels.png and neurons-panels.png (initial | now | explored) in \(dir)")
    }
}
