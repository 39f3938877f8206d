package netns_test

import (
	"fmt"
	"image/color"
	"os"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/mptcpgo/mptcpgo/internal/emu"
)

// plotScenario draws, for each run, the goodput each path carried over time (Mbit/s per
// sampleEvery, from the emulator's delivered bytes) in one direction: upward (client to
// server) or downward. The runs sit side by side, two per row, on one y scale, with the
// events as dashed vertical lines. The PNG goes to docs/file.
func plotScenario(file, title string, runs []scenarioResult, pathNames []string, up bool, events []emu.Event) error {
	if len(runs) == 0 {
		return nil // a filtered run (-run) chose none of these
	}
	var ymax float64
	series := make([][]plotter.XYs, len(runs))
	for k, r := range runs {
		b := r.ba
		if up {
			b = r.ab
		}
		for i := range pathNames {
			var xy plotter.XYs
			for j := 1; j < len(r.at); j++ {
				dt := (r.at[j] - r.at[j-1]).Seconds()
				if dt <= 0 || i >= len(b[j]) {
					continue
				}
				mbps := float64(b[j][i]-b[j-1][i]) * 8 / dt / 1e6
				xy = append(xy, plotter.XY{X: r.at[j].Seconds(), Y: mbps})
				ymax = max(ymax, mbps)
			}
			series[k] = append(series[k], xy)
		}
	}
	ymax *= 1.3 // room for the legend above the lines
	if ymax == 0 {
		ymax = 1
	}
	cols := min(2, len(runs))
	rows := (len(runs) + cols - 1) / cols
	plots := make([][]*plot.Plot, rows)
	for k, r := range runs {
		p := plot.New()
		p.Title.Text = pairingLabel(r.p)
		if r.err != nil {
			p.Title.Text += " (failed)"
		}
		p.X.Label.Text = "time (s)"
		p.Y.Label.Text = "Mbit/s"
		p.Y.Min, p.Y.Max = 0, ymax
		p.X.Min = 0
		p.Add(plotter.NewGrid())
		for i, xy := range series[k] {
			if len(xy) == 0 {
				continue
			}
			l, err := plotter.NewLine(xy)
			if err != nil {
				return err
			}
			l.Color = plotutil.Color(i)
			l.Width = vg.Points(1.5)
			p.Add(l)
			p.Legend.Add(pathNames[i], l)
		}
		for _, ev := range events {
			x := ev.At.Seconds()
			l, err := plotter.NewLine(plotter.XYs{{X: x, Y: 0}, {X: x, Y: ymax}})
			if err != nil {
				return err
			}
			l.Color = color.Gray{Y: 90}
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
			p.Add(l)
			lb, err := plotter.NewLabels(plotter.XYLabels{XYs: plotter.XYs{{X: x, Y: ymax * 0.72}}, Labels: []string{" " + ev.Name}})
			if err != nil {
				return err
			}
			p.Add(lb)
		}
		p.Legend.Top = true
		plots[k/cols] = append(plots[k/cols], p)
	}
	for i := range plots {
		for len(plots[i]) < cols {
			plots[i] = append(plots[i], nil)
		}
	}
	const panelW, panelH = 5 * vg.Inch, 3 * vg.Inch
	img := vgimg.New(panelW*vg.Length(cols), panelH*vg.Length(rows)+0.4*vg.Inch)
	dc := draw.New(img)
	head := draw.Crop(dc, 0, 0, panelH*vg.Length(rows), 0)
	sty := draw.TextStyle{Color: color.Black, Font: plot.DefaultFont, Handler: plot.DefaultTextHandler}
	sty.Font.Size = vg.Points(13)
	sty.XAlign, sty.YAlign = draw.XCenter, draw.YBottom
	head.FillText(sty, vg.Point{X: head.Center().X, Y: head.Min.Y + 0.1*vg.Inch}, title)
	body := draw.Crop(dc, 0, 0, 0, -0.4*vg.Inch)
	tiles := draw.Tiles{Rows: rows, Cols: cols, PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 4,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align(plots, tiles, body)
	for i := range plots {
		for j, p := range plots[i] {
			if p != nil {
				p.Draw(canvases[i][j])
			}
		}
	}
	f, err := os.Create(filepath.Join(scenarioDocs, file))
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", file, err)
	}
	return f.Close()
}
