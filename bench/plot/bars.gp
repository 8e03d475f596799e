# Clustered bars with min..max error bars for two contenders, one cluster per
# row of the data file (written by bench/plot/report.py):
#   label  A_median A_min A_max  [B_median B_min B_max]
# Variables (gnuplot -e): data, output, heading, ylabel, first, second (""
# for one contender only), logscale (1 for a logarithmic y axis).
set terminal pngcairo size 900,480 noenhanced font ",10"
set output output
set title heading
set ylabel ylabel
set style data histogram
set style histogram errorbars gap 2 lw 1
set style fill solid 0.7 border -1
set boxwidth 0.9
set xtics rotate by -25 scale 0
set key above
set grid ytics
if (logscale) { set logscale y } else { set yrange [0:*] }
if (second eq "") {
  plot data using 2:3:4:xtic(1) title first linecolor rgb "#2e7d32"
} else {
  plot data using 2:3:4:xtic(1) title first linecolor rgb "#2e7d32", \
       '' using 5:6:7 title second linecolor rgb "#9e9e9e"
}
