/// SViTE+'s selection drawn on the images (like the paper's Fig. 5): each image enlarged,
/// its removed patches washed out to grey with a thin frame, in a grid.
public enum TokenPictures {
    /// The grey that removed patches are blended toward, and how far (0…1).
    static let grey: Double = 160, wash = 0.75

    /// images: per image its pixels (C, H, W) as bytes (C = 1 or 3); kept: per image the
    /// kept patch indices (row-major over the grid of `size / patch` patches).
    public static func grid(images: [[UInt8]], channels: Int, size: Int, patch: Int, kept: [[Int]],
                            scale: Int = 4, columns: Int = 8) -> Image {
        precondition(images.count == kept.count && !images.isEmpty, "TokenPictures: one kept list per image")
        let side = size * scale, gap = 4
        let cols = min(columns, images.count), rows = (images.count + cols - 1) / cols
        var img = Image(width: cols * side + (cols + 1) * gap, height: rows * side + (rows + 1) * gap, fill: 255)
        let grid = size / patch
        for (n, pixels) in images.enumerated() {
            let keptSet = Set(kept[n])
            let ox = gap + (n % cols) * (side + gap), oy = gap + (n / cols) * (side + gap)
            for y in 0 ..< side {
                for x in 0 ..< side {
                    let py = y / scale, px = x / scale
                    let removed = !keptSet.contains((py / patch) * grid + px / patch)
                    var rgb = (0 ..< 3).map { ch in Double(pixels[(channels == 3 ? ch : 0) * size * size + py * size + px]) }
                    if removed {
                        let edge = y % (patch * scale) == 0 || x % (patch * scale) == 0
                        rgb = rgb.map { edge ? 200 : $0 + (grey - $0) * wash }
                    }
                    img[ox + x, oy + y] = rgb.map { UInt8(max(0, min(255, $0.rounded()))) }
                }
            }
        }
        return img
    }
}
