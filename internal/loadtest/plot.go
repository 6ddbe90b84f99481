package main

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"strings"
)

// Palette indexes of the plot.
const (
	cWhite uint8 = iota
	cBlack
	cGrid
	cAxis
	cText
	cRunner // first of the runners' colours
)

var palette = color.Palette{
	color.RGBA{255, 255, 255, 255},
	color.RGBA{0, 0, 0, 255},
	color.RGBA{225, 225, 225, 255},
	color.RGBA{120, 120, 120, 255},
	color.RGBA{50, 50, 50, 255},
	color.RGBA{31, 119, 180, 255}, // go-plain
	color.RGBA{44, 160, 44, 255},  // go-data
	color.RGBA{255, 127, 14, 255}, // js
	color.RGBA{148, 103, 189, 255},
}

// Plot geometry, in pixels.
const (
	plotW, plotH = 1100, 530
	panelW       = 450
	panelTop     = 150 // room for a title and two rows of legend
	panelBottom  = 470
)

// renderPlot draws tasks/s and p99 accept latency per runner and
// concurrency as two log-scale bar charts, and returns the PNG.
func renderPlot(res *Results) ([]byte, error) {
	img := image.NewPaletted(image.Rect(0, 0, plotW, plotH), palette)
	runners := runnerOrder(res)

	drawText(img, 20, 14, "NO-OP TASKS THROUGH ONE CONNECTION TO A LOOPBACK BROKER SIMULATOR",
		2, cText)
	// The legend, wrapped to the width of the plot.
	x, y := 20, 46
	item := func(w int, draw func(x, y int)) {
		if x+w > plotW-20 {
			x, y = 20, y+24
		}
		draw(x, y)
		x += w + 30
	}
	for i, name := range runners {
		label := strings.ToUpper(res.Runners[name])
		item(20+textWidth(label, 2), func(x, y int) {
			fillRect(img, x, y, 14, 14, cRunner+uint8(i))
			drawText(img, x+20, y, label, 2, cText)
		})
	}
	item(30+textWidth("CEILING, 5 FRAMES", 2), func(x, y int) {
		fillRect(img, x, y+6, 24, 3, cBlack)
		drawText(img, x+30, y, "CEILING, 5 FRAMES", 2, cText)
	})

	tput := func(l LoadResult) float64 { return l.TasksPerSec }
	p99 := func(l LoadResult) float64 { return l.AcceptP99 }
	ceiling := func(conc int) float64 {
		for _, c := range res.Ceiling {
			if c.Inflight == conc {
				return c.RoundTrips * 2 / 5
			}
		}
		return 0
	}
	drawPanel(img, res, runners, 70, "TASKS PER SECOND", tput, compact, ceiling)
	drawPanel(img, res, runners, 620, "ACCEPT LATENCY P99", p99, duration, nil)
	drawText(img, 20, plotH-28,
		fmt.Sprintf("%d CPUS, %s. C: TASK REQUESTS OUTSTANDING = RUNNER SLOTS.",
			res.Machine.CPUs, res.Machine.Model), 1, cAxis)
	drawText(img, 20, plotH-16, "CEILING: SMALL-FRAME ROUND TRIPS/S AT THAT DEPTH × 2 / 5 "+
		"FRAMES PER NO-OP TASK.", 1, cAxis)

	var buf bytes.Buffer
	enc := png.Encoder{CompressionLevel: png.BestCompression}
	if err := enc.Encode(&buf, img); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// runnerOrder lists the runners as the harness ran them.
func runnerOrder(res *Results) []string {
	var names []string
	seen := map[string]bool{}
	for _, l := range res.Load {
		if !seen[l.Runner] {
			seen[l.Runner] = true
			names = append(names, l.Runner)
		}
	}
	return names
}

// drawPanel draws one log-scale bar chart at x0: a group of bars per
// concurrency, one bar per runner, and, when ceiling is set, a line over
// each group at its value.
func drawPanel(img *image.Paletted, res *Results, runners []string, x0 int, title string,
	value func(LoadResult) float64, format func(float64) string, ceiling func(int) float64) {
	drawText(img, x0, panelTop-34, title+" (LOG SCALE)", 2, cText)

	lo, hi := math.Inf(1), math.Inf(-1)
	for _, l := range res.Load {
		if v := value(l); v > 0 {
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
	}
	if ceiling != nil {
		for _, c := range res.Concurrent {
			if v := ceiling(c); v > 0 {
				hi = math.Max(hi, v)
			}
		}
	}
	if math.IsInf(lo, 0) {
		return
	}
	dLo, dHi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi)+0.15)
	if dHi <= dLo {
		dHi = dLo + 1
	}
	y := func(v float64) int {
		f := (math.Log10(v) - dLo) / (dHi - dLo)
		return panelBottom - int(f*float64(panelBottom-panelTop))
	}

	for d := dLo; d <= dHi; d++ {
		gy := y(math.Pow(10, d))
		fillRect(img, x0, gy, panelW, 1, cGrid)
		label := format(math.Pow(10, d))
		drawText(img, x0-8-textWidth(label, 2), gy-7, label, 2, cAxis)
	}
	fillRect(img, x0, panelTop, 1, panelBottom-panelTop+1, cAxis)
	fillRect(img, x0, panelBottom, panelW, 1, cAxis)

	groups := res.Concurrent
	groupW := panelW / max(len(groups), 1)
	barW := min(44, (groupW-24)/max(len(runners), 1))
	for gi, conc := range groups {
		gx := x0 + gi*groupW + (groupW-barW*len(runners))/2
		for ri, name := range runners {
			l, ok := findLoad(res, name, conc)
			if !ok || value(l) <= 0 {
				continue
			}
			top := y(value(l))
			fillRect(img, gx+ri*barW+2, top, barW-4, panelBottom-top, cRunner+uint8(ri))
		}
		if ceiling != nil {
			if v := ceiling(conc); v > 0 {
				fillRect(img, gx-4, y(v), barW*len(runners)+8, 3, cBlack)
			}
		}
		// Value labels last, on white, so that the ceiling line does
		// not cross them.
		for ri, name := range runners {
			l, ok := findLoad(res, name, conc)
			if !ok || value(l) <= 0 {
				continue
			}
			label := format(value(l))
			lx, ly := gx+ri*barW+barW/2-textWidth(label, 1)/2, y(value(l))-11
			fillRect(img, lx-1, ly-1, textWidth(label, 1)+1, 9, cWhite)
			drawText(img, lx, ly, label, 1, cText)
		}
		label := fmt.Sprintf("C=%d", conc)
		drawText(img, x0+gi*groupW+groupW/2-textWidth(label, 2)/2, panelBottom+10, label, 2, cText)
	}
}

func findLoad(res *Results, runner string, conc int) (LoadResult, bool) {
	for _, l := range res.Load {
		if l.Runner == runner && l.Concurrency == conc {
			return l, true
		}
	}
	return LoadResult{}, false
}

// compact formats v in at most five characters: 7.5, 310, 12.4K, 1.2M.
func compact(v float64) string {
	switch {
	case v >= 1e6:
		return trimZero(fmt.Sprintf("%.1f", v/1e6)) + "M"
	case v >= 1e4:
		return fmt.Sprintf("%.0fK", v/1e3)
	case v >= 1e3:
		return trimZero(fmt.Sprintf("%.1f", v/1e3)) + "K"
	case v >= 10:
		return fmt.Sprintf("%.0f", v)
	}
	return trimZero(fmt.Sprintf("%.1f", v))
}

// duration formats microseconds: 45µS, 1.7MS, 1S.
func duration(v float64) string {
	switch {
	case v >= 1e6:
		return compact(v/1e6) + "S"
	case v >= 1e3:
		return compact(v/1e3) + "MS"
	}
	return compact(v) + "µS"
}

func trimZero(s string) string { return strings.TrimSuffix(s, ".0") }
