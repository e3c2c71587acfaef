# fanout.gp: nim.rerank_many against a plain libcurl multi program (bench/fanout.sh).
# gnuplot -c bench/plots/fanout.gp DATA OUT NOTE
# DATA: concurrency nim_req_s curl_req_s nim_kb_per_request curl_kb_per_request
load 'bench/plots/common.gp'
set terminal pngcairo size 900,420 font 'sans,10' noenhanced
set output ARG2
set multiplot layout 1,2 title "Fan-out: nim.rerank_many against a libcurl multi program, " . \
    "upstream holding each request\n" . ARG3
set logscale x 2
set xlabel 'requests in flight (concurrency)'
set key top left
set title 'throughput'
set logscale y
set ylabel 'requests per second'
plot ARG1 using 1:2 with linespoints lw 2 pt 7 lc rgb NIM title 'nimrank', \
     '' using 1:3 with linespoints lw 2 pt 5 dt 2 lc rgb BASE title 'libcurl multi'
set title 'memory per request in flight'
unset logscale y
set yrange [0:*]
set ylabel 'KB (peak RSS growth / concurrency)'
set key top right
plot ARG1 using 1:4 with linespoints lw 2 pt 7 lc rgb NIM title 'nimrank', \
     '' using 1:5 with linespoints lw 2 pt 5 dt 2 lc rgb BASE title 'libcurl multi'
unset multiplot
