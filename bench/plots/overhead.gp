# overhead.gp: client CPU per rerank call, nimrank against raw libcurl (bench/overhead.sh).
# gnuplot -c bench/plots/overhead.gp DATA OUT NOTE
# DATA: docs nim_us curl_us ratio floor_us, one row per document count; floor_us is curl's
# CPU plus that of only building the result's tables ("-" in output from before the column).
load 'bench/plots/common.gp'
set output ARG2
set title "CPU per rerank call: nimrank against raw libcurl, same body, same upstream\n" . ARG3
set logscale xy
set xrange [0.5:30000]
set format x '%.0f'
set xlabel 'documents per call (about 200 bytes each; above 512 nimrank sends batches of 512)'
set ylabel 'client CPU per call (µs)'
set key top left
set datafile missing '-'
plot ARG1 using 1:2 with linespoints lw 2 pt 7 ps 1.2 lc rgb NIM title 'nimrank (nim.rerank)', \
     '' using 1:3 with linespoints lw 2 pt 5 ps 1.2 lc rgb BASE \
        title 'raw libcurl (curl_baseline: one request, reused handle)', \
     '' using 1:5 with linespoints lw 1 dt 2 pt 1 ps 1 lc rgb 'gray40' \
        title 'floor: raw libcurl + building the result tables alone', \
     '' using 1:2:(sprintf('%.1fx', $4)) with labels offset 0,1.2 tc rgb NIM notitle
