# bm25.gp: the embedded offline reranker's throughput (bench/bm25.sh): the C core alone and
# the same work through nim.rerank{model = "local/bm25"}.
# gnuplot -c bench/plots/bm25.gp DATA OUT NOTE
# DATA: "label" median_ms mb_per_s, one row each.
load 'bench/plots/common.gp'
set terminal pngcairo size 800,380 font 'sans,10' noenhanced
set output ARG2
set title "local/bm25 throughput, one core\n" . ARG3
set style fill solid 0.85 border -1
set boxwidth 0.5
set yrange [0:*]
set offsets 0.6, 0.6, graph 0.15, 0
set ylabel 'MB of documents per second'
unset key
plot ARG1 using 0:3:xtic(1) with boxes lc rgb NIM, \
     '' using 0:3:(sprintf('%.0f MB/s (%.2f ms)', $3, $2)) with labels offset 0,1
