# gateway.gp: nimrank serve against nginx proxy_pass and the upstream alone (bench/proxy.sh).
# gnuplot -c bench/plots/gateway.gp DIR OUT NOTE
# DIR holds TARGET-DOCS.dat (TARGET direct, nginx, nimrank; DOCS 10, 100): conns req_s p50 p99.
load 'bench/plots/common.gp'
set terminal pngcairo size 900,650 font 'sans,10' noenhanced
set output ARG2
d = ARG1
set multiplot layout 2,2 title "Rerank gateway: nimrank serve against nginx proxy_pass, " . \
    "canned upstream\n" . ARG3
set logscale x 2
set xlabel 'connections'
set key top left opaque
do for [n in '10 100'] {
    set title n . ' documents: throughput'
    set ylabel 'requests per second'
    unset logscale y
    set yrange [0:*]
    plot d . '/direct-' . n . '.dat' using 1:2 with linespoints lw 2 pt 9 lc rgb ALT \
            title 'upstream alone', \
         d . '/nginx-' . n . '.dat' using 1:2 with linespoints lw 2 pt 5 lc rgb BASE \
            title 'nginx proxy_pass', \
         d . '/nimrank-' . n . '.dat' using 1:2 with linespoints lw 2 pt 7 lc rgb NIM \
            title 'nimrank serve'
}
do for [n in '10 100'] {
    set title n . ' documents: latency (p50 solid, p99 dashed)'
    set ylabel 'ms'
    set logscale y
    set yrange [*:*]
    plot d . '/nginx-' . n . '.dat' using 1:3 with linespoints lw 2 pt 5 lc rgb BASE \
            title 'nginx p50', \
         '' using 1:4 with linespoints lw 1 pt 5 dt 2 lc rgb BASE title 'nginx p99', \
         d . '/nimrank-' . n . '.dat' using 1:3 with linespoints lw 2 pt 7 lc rgb NIM \
            title 'nimrank p50', \
         '' using 1:4 with linespoints lw 1 pt 7 dt 2 lc rgb NIM title 'nimrank p99'
}
unset multiplot
