"""The public sources of the datasets and trained networks the tasks, examples and analyses use,
with the SHA-256 of every file, for :func:`sparse_engine.data.download`.

Each entry names where a file comes from (``url``; ``member`` when the file is inside a zip archive)
and the checksum of the file as it is kept (the member, for an archive), so a download is checked
byte for byte before it is used. Repository files are pinned to a commit.
"""
from __future__ import annotations

_UCI = "https://archive.ics.uci.edu/static/public"
_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist"  # the mirror torchvision reads
_SPARSE_RNNS = "https://raw.githubusercontent.com/XinjieZhang/sparse-RNNs/739428a487dead322ac9a5f849abb27544386839"
_NNSTD = "https://raw.githubusercontent.com/Shiweiliuiiiiiii/Sparse_Topology_Distance/ef8bf145a570b193a87a5bd17c12eefb168b1d16"

#: name -> (what it is, its licence, the page a user can read about it)
ABOUT = {
    "mnist_test": ("MNIST test set, 10,000 images and labels (idx, gzip)", "CC BY-SA 3.0",
                   "http://yann.lecun.com/exdb/mnist/"),
    "sms_spam": ("SMS Spam Collection, 5,574 messages labelled ham/spam", "CC BY 4.0",
                 "https://archive.ics.uci.edu/dataset/228/sms+spam+collection"),
    "gesture": ("Gesture Phase Segmentation, the 7 processed recordings (*_va3.csv)", "CC BY 4.0",
                "https://archive.ics.uci.edu/dataset/302/gesture+phase+segmentation"),
    "mackey_glass": ("Mackey-Glass series, tau = 17, as the sparse-RNNs code uses it", "MIT",
                     "https://github.com/XinjieZhang/sparse-RNNs"),
    "sparse_rnns_networks": ("recurrent weights of RNNs trained by pruning, SET or deep rewiring (Zhang et al. "
                             "2023), as Gephi edge lists", "MIT", "https://github.com/XinjieZhang/sparse-RNNs"),
    "nnstd_topologies": ("four SET-trained 784-784-784-784-10 MLPs at epochs 0 and 190 (Liu et al. 2020, "
                         "Figure 4)", "see the repository", "https://github.com/Shiweiliuiiiiiii/Sparse_Topology_Distance"),
}

#: name -> {file (relative to the dataset's folder): SHA-256}
SHA256 = {
    "mnist_test": {
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "sms_spam": {
        "SMSSpamCollection": "6a722dac2ec7b392225b0df1bf1860024c50a00c1602f917a7410ed86731b664",
    },
    "gesture": {
        "a1_va3.csv": "54e174983592f10a739e15a39cb433559a4313bbb090404d90e057b6ad14c4d0",
        "a2_va3.csv": "a067eac95288fdf569e3e8a4a3264431483e1c761974b17397004ca6b4bcd366",
        "a3_va3.csv": "8c654d8aa8c3827a8cd70cffbb03c121eef7a63f733c44612320db286e7a76f1",
        "b1_va3.csv": "1e368713eafe49fcad7066ca7bb656146ec4fab07f5321fb28c18d67d5f990ee",
        "b3_va3.csv": "1015ae81042cd97729367aea8fb370eb6a93669959a5065863309de20e89ba5c",
        "c1_va3.csv": "4bd3d53f36e2ade19844b31a143b93b1c9410aad5eead3f7dcb37b0b84fb64db",
        "c3_va3.csv": "e9bf6faa2271bb28c6008564ebe331ee86d963d7f468ffea979da39389d970a2",
    },
    "mackey_glass": {
        "MackeyGlass_t17.txt": "7385711c7af1890e58475ee70c3f34186f3a7278a578479aa20352e5a24f472e",
    },
    "sparse_rnns_networks": {
        "Gesture__SET_n_128_p_0.05_zeta_0.1__epoch_0.csv": "bbd5bfab25acd87f4b1c594a023278fc84fb52b79c48cc2d0c0c1a9b79a26beb",
        "Gesture__SET_n_128_p_0.05_zeta_0.1__epoch_100.csv": "c7e1fda4a1f5fa5cfdf60d549e3258de139f24a587eab1982d4233229df1bd6d",
        "Gesture__SET_n_128_p_0.05_zeta_0.1__epoch_150.csv": "fa80381d4c9c93e1149b2aa75e46b57396d2536009d580fda7fb45af6cd7f6a9",
        "Gesture__SET_n_128_p_0.05_zeta_0.1__epoch_200.csv": "f84143d47fee112c570c77ec7dcb9e23e88053f069bdbd9f0e0d7a66be132b3a",
        "Gesture__SET_n_128_p_0.05_zeta_0.1__epoch_50.csv": "0dd013c5b788620791f79ae5cde4d4bab2bba6270aca48822e1228e78e4ac995",
        "Gesture__pruning_n_128_p_0.05__epoch_0.csv": "68e2a9b1e75d5e36823a36cf90508aaad13019ee6a05b24884e6a6ba9c1d94d9",
        "Gesture__pruning_n_128_p_0.05__epoch_100.csv": "48684d1939564d5adedd482af5a6d0aa6956c8c3ff01f3f677b35f9c362cf1d3",
        "Gesture__pruning_n_128_p_0.05__epoch_150.csv": "8d3f250234543fa02891eee0fa3e54b853e3a020e98d9138665b6e25faa1dfde",
        "Gesture__pruning_n_128_p_0.05__epoch_200.csv": "d5a1a4107d3a8ae6bb9cff7835adb62da976a9addd0348300b916d6efb82450a",
        "Gesture__pruning_n_128_p_0.05__epoch_50.csv": "1b9a5d648b8e30d6ac42aa4a45cb88f36002079c835a69aa08d540b3445e8316",
        "Gesture_ctrnn__deep_rewiring_n_128_p_0.05__epoch_0.csv": "6409a9e316bca90cf078549e9c91d9f48a5cc8b7faaf62eb67c5b13b6481cb3b",
        "Gesture_ctrnn__deep_rewiring_n_128_p_0.05__epoch_100.csv": "0550b20c61b816088dd76d7fed4aa4afa777fbc17673d90a955a41e7a03ae759",
        "Gesture_ctrnn__deep_rewiring_n_128_p_0.05__epoch_150.csv": "e575a52ecb3fedd8f8463a9c71fe5d8dd2542944a7ea4bd4042095028467fa44",
        "Gesture_ctrnn__deep_rewiring_n_128_p_0.05__epoch_200.csv": "afd07976faed351959ec7c232716f7741ad2ee413acf5a4f5680812d9cd66951",
        "Gesture_ctrnn__deep_rewiring_n_128_p_0.05__epoch_50.csv": "9549e9db7d605a38d3071e776e6f70f6b945772aea35863c5296185c6bdee7fb",
        "Gesture_ctrnn__pruning_n_128_p_0.05__epoch_0.csv": "4732a26f8fc4ed0b5dfa6d1a444bfb96739856e8ee7ec112ba4155741fec7680",
        "Gesture_ctrnn__pruning_n_128_p_0.05__epoch_100.csv": "56351a9768e6678d5c8ef8ef2a2030aab7685a5b576bb21012b989b5521fb1c4",
        "Gesture_ctrnn__pruning_n_128_p_0.05__epoch_150.csv": "55af686bcc1e04ada80b9bca3fec920bca5512a3ba2975730975f19f57c6d730",
        "Gesture_ctrnn__pruning_n_128_p_0.05__epoch_200.csv": "51331f0a1862cde012e11d037eb89adf485ad7355b1578f5fbac42e795c117fd",
        "Gesture_ctrnn__pruning_n_128_p_0.05__epoch_50.csv": "6d57a8d336f37b79908d1867249ab378893b0c1e6b6f48cc0b1a2c7c12942b2a",
        "MG__SET_n_128_p_0.05_zeta_0.2__epoch_0.csv": "344e551cf0eb3f68a67bc3af582ce0b38ea9892e0a58271b6313a640bf6eb712",
        "MG__SET_n_128_p_0.05_zeta_0.2__epoch_100.csv": "b179474eb4739a3df2e3c7a1c9e682c8f895f79159f4bae4ef20c607ca7839ca",
        "MG__SET_n_128_p_0.05_zeta_0.2__epoch_50.csv": "94b215dc938d241ab1bf116c838bb8ae3bc1cc4e343f6e1c9d237d705e868b83",
        "MG__pruning_n_128_p_0.05__epoch_0.csv": "e91ea457f424b88b78be96a7d56e1bab0969f4ee1424333c707871e2c71803a3",
        "MG__pruning_n_128_p_0.05__epoch_100.csv": "d2913122a7e43c6968f3f79951372531ef1022820f4ecd6184d72010be50e83f",
        "MG__pruning_n_128_p_0.05__epoch_50.csv": "7a8075a027af3fd6fd0a99424183879bc061326dd6ce72fa6ffc1344050d971b",
        "MNIST__SET_n_150_p_0.05_zeta_0.2__epoch_0.csv": "a1d88a62fd71ab45378b30e74feb3c699cd989abc4d27dc20ba8a209d5cf8b14",
        "MNIST__SET_n_150_p_0.05_zeta_0.2__epoch_100.csv": "62be3d5c8c091bf12e8e7b2c5fa1bb30e561aae3436d67c78789288424353f84",
        "MNIST__SET_n_150_p_0.05_zeta_0.2__epoch_150.csv": "c67c7078dcf16bd0af1cc706cecb44568abae474e470ad418f450f4919a9de48",
        "MNIST__SET_n_150_p_0.05_zeta_0.2__epoch_200.csv": "3f82c5083bfa7eb8b0cdc14a19dcbd9671cf49d56677d9a444ab1ffb7b173777",
        "MNIST__SET_n_150_p_0.05_zeta_0.2__epoch_50.csv": "3a68bbcdf454a7ed04eb2d99ba91a76dd0ef000cd61301b52d43fef736e4a9f5",
        "MNIST__pruning_n_150_p_0.05__epoch_0.csv": "848aa59ba4a03dd7eab7c6fb4cb7ef5ebdff2631c5e01d91007a9a6485bd0882",
        "MNIST__pruning_n_150_p_0.05__epoch_100.csv": "688862d966d772fbf15f903b960053c4f0cc42e3756cf76d44a078fcf75d05b0",
        "MNIST__pruning_n_150_p_0.05__epoch_150.csv": "81792f28033194c14b99b4da39fe80ba73193ee1d01ed12b79c2e10648f35225",
        "MNIST__pruning_n_150_p_0.05__epoch_200.csv": "16363188b0adf8ac0803b3cac93fbc819763d31ab5e9abcc07e962683aac3eb0",
        "MNIST__pruning_n_150_p_0.05__epoch_50.csv": "52360e650d8ac56b397329032320fb05ce431800925ee8fc516738aedeeaf798",
        "Person_node__deep_rewiring_n_64_p_0.05__epoch_0.csv": "3d20a2f3565770d5fb53942f6a16f0bf11acdd3cbcc476b093cebcc86af269c1",
        "Person_node__deep_rewiring_n_64_p_0.05__epoch_100.csv": "d6233a372348249296b64e7b91d8440dd2fbe67169434885109b81505b2732bd",
        "Person_node__deep_rewiring_n_64_p_0.05__epoch_50.csv": "05d25f6ae0e15b8a0622761d9483625c26bda0397926d657f4228fd093c33054",
        "Person_node__pruning_n_64_p_0.05__epoch_0.csv": "e9348eac31aafd2a92352ed88ffa988f8ff9e6ef94535d464baec895347a6cf1",
        "Person_node__pruning_n_64_p_0.05__epoch_100.csv": "67a2307c06e35d5c0ebbc9017eb01864be83e9154461d458762c41e5083be15e",
        "Person_node__pruning_n_64_p_0.05__epoch_50.csv": "7f65adb0bb82c869c3420b834c815e5320b89221fca137576cae5cb4c134dd0d",
        "SMS__SET_n_100_p_0.05_zeta_0.1__epoch_0.csv": "863be90be12699e15b0fb52ffa807d72c3de9724fbf1a80b1ab8004b37dc3fea",
        "SMS__SET_n_100_p_0.05_zeta_0.1__epoch_100.csv": "5d122e217c81401580e7a46a316c41c300d1332f88be4a4c2ce00214aad3bed0",
        "SMS__SET_n_100_p_0.05_zeta_0.1__epoch_50.csv": "a59f97172002add7264537f0cac789f1b1c31d1240b192bf72b446476b7839b8",
        "SMS__pruning_n_100_p_0.05_1__epoch_0.csv": "0916281e562e4150ce2e3a3a2e70358239d83564b25af703ae00c75ff28da09c",
        "SMS__pruning_n_100_p_0.05_1__epoch_100.csv": "b5d3b08a6204a7502788fcb8ad8b9c972bd1e17c0e438ded639a46b74f5e6002",
        "SMS__pruning_n_100_p_0.05_1__epoch_50.csv": "05c5303860849db22f6452c3d88c2d67e95d6ca97a9fe165b150af5b85a413af",
    },
    "nnstd_topologies": {
        "e5_s0_w0/epoch_000/weight_l0.npz": "5f5f4e117f37a85b7358ec78a0a77dbb47cfd118d435ee2a28a88581a376cd37",
        "e5_s0_w0/epoch_000/weight_l1.npz": "243cea80ce5c540046dd66ed0d9557881cd997c55b1efc6d9d9d7d6cfdf1092e",
        "e5_s0_w0/epoch_000/weight_l2.npz": "f97b8e22fccb29bd1c57112d5a82faa88b2b547dba61aff451aa9d207a256b89",
        "e5_s0_w0/epoch_000/weight_l3.npz": "abc26a385a71d85413e99d342a7d38f01b2db181629543efe91c9a5d7637c7e9",
        "e5_s0_w0/epoch_190/weight_l0.npz": "1b1c35abb2a560cd6bd9125d21df633191e039ec20df6d4353ebba6bb62efa36",
        "e5_s0_w0/epoch_190/weight_l1.npz": "d8119acf35d6fd0cbddd608f59b5239112af0671dd28ec4b9fa0cdcb29b22dd4",
        "e5_s0_w0/epoch_190/weight_l2.npz": "350fe38d70655d53ed186a162cc1b8aacfc4071b4cd7d75cb3fada0c2b47257b",
        "e5_s0_w0/epoch_190/weight_l3.npz": "64651775b98ed16c4853fd1f5bb7cb35242367ef2aee75e4094fa8ce80536bbb",
        "e5_s0_w1/epoch_000/weight_l0.npz": "3ee4e93a30404e561ddcf461069b22a8771b1e128a9259d1aec8ddd667cb9a2e",
        "e5_s0_w1/epoch_000/weight_l1.npz": "869bb6ef78ce5299d26e2177a649af373b11cc3eddf8fa2e400ece27a6b5adb5",
        "e5_s0_w1/epoch_000/weight_l2.npz": "00f216173a256adaeeb8d166cdfa088a523512bdec9b7cdcce0c210023e9f967",
        "e5_s0_w1/epoch_000/weight_l3.npz": "7cd54284136cbba7a17ae2e5d7bb826f88f7df78c6d5e7847a6680fcb667f43a",
        "e5_s0_w1/epoch_190/weight_l0.npz": "a817a229e4640175243189057b62dcb12966906889acca47eeabcf1393aeeb2c",
        "e5_s0_w1/epoch_190/weight_l1.npz": "0673c1b5c895a87a114d730944385db9b7bd4b6bce3231d031d10a9e432cdb24",
        "e5_s0_w1/epoch_190/weight_l2.npz": "619a6ffee4df1b4c2d11156378d3705784adfd50c052356c3cc3477aecdb34ba",
        "e5_s0_w1/epoch_190/weight_l3.npz": "74914a3c3b5e27b808e20ed97264405703ab3e184ada35aba4cfd92eec2bc26b",
        "e5_s0_w5/epoch_000/weight_l0.npz": "164c824cab5c30b9f381eec44b650ff405cfc5f08c0720b55234c3882dd288fa",
        "e5_s0_w5/epoch_000/weight_l1.npz": "affb205f47b1909512326753afebe4e81d0bc4e56a775a5f10af18e502b92e7c",
        "e5_s0_w5/epoch_000/weight_l2.npz": "82eac7479ea9dc5470c73d47761fbdc92614934464a00219da93bc8e2e64c36f",
        "e5_s0_w5/epoch_000/weight_l3.npz": "fa7ea295b601c434f832971d69ec02ce4f81b921465112078c07af6e9ab61bf7",
        "e5_s0_w5/epoch_190/weight_l0.npz": "7b1c4b42061a0f2bba54d3528e02f8ddfc58b532b9ec5f49f09a2a4d1fd29fc3",
        "e5_s0_w5/epoch_190/weight_l1.npz": "0c046efa0d74104d1cd5297e1dad7aee8c1fb61e440403c2a8fc059b5f1ec912",
        "e5_s0_w5/epoch_190/weight_l2.npz": "9ad93d048578082a1eea2e20313b9b68f1b34ba6e7851b53a5428b60ed6121fe",
        "e5_s0_w5/epoch_190/weight_l3.npz": "caaa43c4bf7d17854896e500d8d822a398a9403118d15a6ba286bd0a400e15d5",
        "e5_s0_w9/epoch_000/weight_l0.npz": "6b2259ddebb687e2b34cf351c8d85630c8b8f610de653994908e9fe251a02c0a",
        "e5_s0_w9/epoch_000/weight_l1.npz": "dd3e5ecad7e9f433361f428b2de7700d4630567d93b2fced2dcf30a3d247ea11",
        "e5_s0_w9/epoch_000/weight_l2.npz": "72da45e4503bca7ebdd650f1e8ae2cefd984e1c73932d13c14fa7c7aa18d19cc",
        "e5_s0_w9/epoch_000/weight_l3.npz": "9188675a9714ac4c6aaa9ee014ab12787b1e1d77f1dd8bf6b4914f93f027e15a",
        "e5_s0_w9/epoch_190/weight_l0.npz": "c369038abc6f28300305d21ab02e000d753ce972f43732a987e095c12ac77c0f",
        "e5_s0_w9/epoch_190/weight_l1.npz": "19064823095fe49a8c7eb026c7b4190cbc69ae3556e6a67ba343ac51f5a23160",
        "e5_s0_w9/epoch_190/weight_l2.npz": "f393fded52575ca470ba382221713dcc83433d7a1a0aa2c6bad363389ebf2b52",
        "e5_s0_w9/epoch_190/weight_l3.npz": "4725f5ccc16757200e2635591d8fff5d0f6f8f1f4128a0225f8da329d0120cb9",
    },
}


def source(name: str, file: str) -> tuple[str, str | None]:
    """(url, member of the zip archive at url or None) of one file of a dataset."""
    if name == "mnist_test":
        return f"{_MNIST}/{file}", None
    if name == "sms_spam":
        return f"{_UCI}/228/sms+spam+collection.zip", file
    if name == "gesture":
        return f"{_UCI}/302/gesture+phase+segmentation.zip", file
    if name == "mackey_glass":
        return f"{_SPARSE_RNNS}/data/MG/MackeyGlass/{file}", None
    if name == "sparse_rnns_networks":  # Task__run__epoch_E.csv <- results/Task/run/edge_list_weighted_E.csv
        task, run, epoch = file[: -len(".csv")].split("__")
        return f"{_SPARSE_RNNS}/results/{task}/{run}/edge_list_weighted_{epoch[len('epoch_'):]}.csv", None
    if name == "nnstd_topologies":
        return f"{_NNSTD}/topo/{file}", None
    raise KeyError(name)
